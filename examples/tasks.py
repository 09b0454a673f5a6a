"""The README's example: a worker for these tasks is minicelery's main job.

Start a worker:   python -m minicelery -A examples.tasks worker --loglevel=INFO
Send it work:     python -m examples.send
"""

from __future__ import annotations

import os
import time

from minicelery import Celery

app = Celery(
    "examples.tasks",
    broker=os.environ.get("MINICELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers."""
    return x + y


@app.task(bind=True, max_retries=3, default_retry_delay=1)
def flaky_fetch(self, url: str) -> str:
    """Pretend to fetch a URL that fails twice before it answers: shows retries."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{url} did not answer"))
    return f"fetched {url} after {self.request.retries} retries"


@app.task(soft_time_limit=2)
def slow_square(x: int) -> int:
    """Square ``x`` slowly: shows work spread over the child processes."""
    time.sleep(0.2)
    return x * x
