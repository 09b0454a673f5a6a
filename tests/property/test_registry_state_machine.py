"""A state machine over apps, task definitions, shared tasks and finalization, checked against a model.

The model is Celery's rule set written out plainly: an unfinalized app holds only the tasks that were
touched; finalizing adds its pending tasks and every shared task registered so far; ``@app.task`` (shared
by default) reaches apps finalized *later*; ``@shared_task`` also reaches apps finalized *already*.
"""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from minicelery import Celery, _state, shared_task


class AppModel:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self.finalized = False
        self.pending: set[str] = set()
        self.registered: set[str] = set()


class Registries(RuleBasedStateMachine):
    apps = Bundle("apps")
    promises = Bundle("promises")
    shared = Bundle("shared")

    def __init__(self) -> None:
        super().__init__()
        _state._on_app_finalizers.clear()
        _state._default_app = None
        _state._tls.__dict__.pop("current_app", None)
        for app in _state.live_apps():
            _state.deregister_app(app)
        self.models: list[AppModel] = []
        self.global_shared: list[str] = []
        self.names = (f"t{n}" for n in itertools.count())
        self.current: AppModel | None = None

    def model_of(self, app: Celery) -> AppModel:
        return next(m for m in self.models if m.app is app)

    @rule(target=apps, main=st.sampled_from([None, "a", "b"]))
    def new_app(self, main):
        model = AppModel(Celery(main))
        self.models.append(model)
        self.current = model
        return model

    @rule(target=promises, model=apps, shared=st.booleans())
    def define_task(self, model, shared):
        name = next(self.names)
        task = model.app.task(name=name, shared=shared)(lambda: name)
        if model.finalized:
            model.registered.add(name)
        else:
            model.pending.add(name)
        if shared:
            self.global_shared.append(name)
        return (model, name, task)

    @rule(target=shared)
    def define_shared_task(self):
        name = next(self.names)
        proxy = shared_task(name=name)(lambda: name)
        self.global_shared.append(name)
        for model in self.models:
            if model.finalized:
                model.registered.add(name)
        return (name, proxy)

    def _finalize(self, model: AppModel) -> None:
        if not model.finalized:
            model.finalized = True
            model.registered |= model.pending | set(self.global_shared)

    @rule(model=apps)
    def finalize(self, model):
        model.app.finalize()
        self._finalize(model)

    @rule(model=apps)
    def read_tasks(self, model):
        assert isinstance(model.app.tasks, dict)
        self._finalize(model)

    @rule(item=consumes(promises))
    def touch(self, item):
        model, name, task = item
        assert task.name == name and task.app is model.app
        assert task() == name
        model.registered.add(name)

    @rule(item=shared)
    def resolve_shared(self, item):
        name, proxy = item
        if self.current is None:  # no app yet: the default app is created on first use
            self.current = AppModel(_state.get_current_app())
            assert self.current.app.main == "default"
            self.models.append(self.current)
        assert proxy.app is self.current.app  # resolving reads app.tasks: the current app finalizes
        self._finalize(self.current)
        assert proxy() == name

    @invariant()
    def registries_match_the_model(self):
        for model in self.models:
            assert set(model.app._tasks) == model.registered
            assert model.app.finalized is model.finalized
            for name in model.registered:
                assert model.app._tasks[name].app is model.app


Registries.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_registries = Registries.TestCase
