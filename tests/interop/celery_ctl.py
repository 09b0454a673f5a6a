"""``celery_side`` with remote control on, on the test's own names (``-A celery_ctl``).

``INTEROP_CONTROL`` names the control exchange (``<name>.pidbox``) and, with ``ev`` appended, the event
exchange: the broker is shared, so no other worker hears these tests and they hear no other worker.
"""

from __future__ import annotations

import os

from celery_side import app  # the app and its tasks

app.conf.update(worker_enable_remote_control=True, control_exchange=os.environ.get("INTEROP_CONTROL", "celery"),
                event_exchange=os.environ.get("INTEROP_CONTROL", "celery") + "ev")
