"""``mini_side`` on the test's own control and event exchanges (``-A mini_ctl``; see ``celery_ctl``)."""

from __future__ import annotations

import os

from mini_side import app  # the app and its tasks

app.conf.control_exchange = os.environ.get("INTEROP_CONTROL", "celery")
app.conf.event_exchange = os.environ.get("INTEROP_CONTROL", "celery") + "ev"
