"""The worker's start-up banner, in Celery's shape (``celery.apps.worker.Worker.startup_info``)."""

from __future__ import annotations

import logging
import platform
from datetime import datetime
from typing import Any

from .. import __version__
from ..urls import mask_broker_url

__all__ = ["banner"]

ARTLINES = [
    " --------------", "--- ***** -----", "-- ******* ----", "- *** --- * ---", "- ** ----------",
    "- ** ----------", "- ** ----------", "- ** ----------", "- *** --- * ---", "-- ******* ----",
    "--- ***** -----", " --------------",
]


def banner(app: Any, *, hostname: str, concurrency: int, queues: list[str], loglevel: int,
           task_events: bool = False) -> str:
    """The banner a worker prints before it starts: node, configuration, queues and (at INFO) tasks."""
    conf = app.conf
    info = [
        f"{hostname} v{__version__} (minicelery)", "",
        f"{platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}", "",
        "[config]",
        f".> app:         {app.main or '__main__'}:{id(app):#x}",
        f".> transport:   {mask_broker_url(conf.broker_url, '**')}",
        f".> results:     {app.backend.url}",
        f".> concurrency: {concurrency} (prefork)",
        f".> task events: {'ON' if task_events else 'OFF (enable -E to monitor tasks in this worker)'}", "",
        "[queues]",
    ]
    info += [f".> {q:<16} exchange={q}(direct) key={q}" for q in sorted(queues)] + [""]
    lines = [" "] + [f"{ARTLINES[i]} {line}" if i < len(ARTLINES) else " " * 16 + line
                     for i, line in enumerate(info)]
    text = "\n".join(lines) + "\n"
    if loglevel <= logging.INFO:
        names = sorted(name for name in app.tasks
                       if loglevel <= logging.DEBUG or not name.startswith("celery."))
        text += "\n[tasks]\n" + "\n".join(f"  . {name}" for name in names) + "\n"
    return text
