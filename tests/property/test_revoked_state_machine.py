"""The revoked set as a state machine against a plain model: bounded in size, ids expire, order kept."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from minicelery.worker.revoked import RevokedSet

ids = st.sampled_from([f"id{n}" for n in range(12)])


class RevokedMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.maxlen, self.expires = 5, 10.0
        self.revoked = RevokedSet(maxlen=self.maxlen, expires=self.expires, clock=lambda: self.now)
        self.model: list[tuple[str, float]] = []  # (id, revoked at), oldest first

    def _model_ids(self) -> list[str]:
        alive = [(i, t) for i, t in self.model if t > self.now - self.expires]
        return [i for i, _ in alive][-self.maxlen:]

    @rule(task_id=ids)
    def add(self, task_id):
        self.revoked.add(task_id)
        self.model = [(i, t) for i, t in self.model if i != task_id] + [(task_id, self.now)]
        self.model = [(i, t) for i, t in self.model if i in self._model_ids()]

    @rule(seconds=st.floats(0, 6))
    def tick(self, seconds):
        self.now += seconds

    @rule(task_id=ids)
    def contains(self, task_id):
        assert (task_id in self.revoked) == (task_id in self._model_ids())

    @invariant()
    def same_ids_in_order(self):
        assert list(self.revoked) == self._model_ids()
        assert len(self.revoked) <= self.maxlen


TestRevokedSet = RevokedMachine.TestCase
TestRevokedSet.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_an_empty_set_answers_without_work_and_maxlen_must_be_positive():
    revoked = RevokedSet()
    assert "x" not in revoked and len(revoked) == 0
    try:
        RevokedSet(maxlen=0)
    except ValueError as exc:
        assert "maxlen" in str(exc)
    else:
        raise AssertionError("maxlen=0 was accepted")
