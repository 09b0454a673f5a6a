"""``ctasks`` with remote control and events on names of the test's own (``-A rctasks``).

The broker is shared, so every test sets ``RCTASKS_CONTROL`` to a unique name: the worker answers on
``<name>.pidbox`` and publishes events to ``<name>ev``, and no other worker on the broker hears it.
"""

from __future__ import annotations

import os

from ctasks import add, app, hold, sleepy  # noqa: F401 - the tasks the worker registers

app.conf.control_exchange = os.environ.get("RCTASKS_CONTROL", "celery")
app.conf.event_exchange = os.environ.get("RCTASKS_CONTROL", "celery") + "ev"
