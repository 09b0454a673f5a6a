"""Test-wide isolation: each test starts with no current app, no default app and no shared tasks.

Celery keeps these in process-wide state (and so does minicelery, on purpose); without this reset the
tests would see each other's apps and shared tasks.
"""

from __future__ import annotations

import pytest

from minicelery import _state


@pytest.fixture(autouse=True)
def isolated_app_state():
    finalizers = dict(_state._on_app_finalizers)
    default = _state._default_app
    current = getattr(_state._tls, "current_app", None)
    _state._on_app_finalizers.clear()
    _state._default_app = None
    _state._tls.__dict__.pop("current_app", None)
    yield
    _state._on_app_finalizers.clear()
    _state._on_app_finalizers.update(finalizers)
    _state._default_app = default
    if current is None:
        _state._tls.__dict__.pop("current_app", None)
    else:
        _state._tls.current_app = current
    for app in _state.live_apps():
        _state.deregister_app(app)
