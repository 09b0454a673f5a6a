"""The worker's shutdown flag, set by its signal handlers and read by its loop.

Signal handlers only set this flag: the main thread may be inside pika when a signal arrives, and pika
is not reentrant. The loop notices the flag within one wait (at most a quarter of a second) and acts.
Celery's counterpart is ``celery.apps.worker``'s ``_shutdown_handler`` and the ``WorkerShutdown`` /
``WorkerTerminate`` exceptions it raises.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

__all__ = ["Shutdown"]


class Shutdown:
    """None until a shutdown is asked for, then ``'warm'`` (finish running tasks) or ``'cold'`` (stop now)."""

    def __init__(self, announce: bool = True) -> None:
        self.mode: str | None = None
        self.announce = announce  # print Celery's lines ("worker: Warm shutdown (MainProcess)")

    def install(self) -> None:
        """Handle SIGTERM (warm), SIGINT (warm, then cold) and SIGQUIT (cold) in this process."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGQUIT, self._on_sigquit)

    def warm(self) -> None:
        """Ask for a warm shutdown (no effect once any shutdown was asked for)."""
        if self.mode is None:
            self._say("worker: Warm shutdown (MainProcess)")
            self.mode = "warm"

    def cold(self) -> None:
        """Ask for a cold shutdown."""
        if self.mode != "cold":
            self._say("worker: Cold shutdown (MainProcess)")
            self.mode = "cold"

    def _say(self, text: str) -> None:
        """Write a line to stdout, also from a signal handler (``os.write`` is safe there, ``print`` not)."""
        if self.announce:
            os.write(1, (text + "\n").encode())

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.warm()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.mode is None:
            self._say("worker: Hitting Ctrl+C again will initiate cold shutdown, terminating all running "
                      "tasks!")
            self.warm()
        else:
            self._say("worker: Hitting Ctrl+C again will terminate all running tasks!")
            self.cold()

    def _on_sigquit(self, signum: int, frame: FrameType | None) -> None:
        self._say("worker: Hitting Ctrl+C again will terminate all running tasks!")
        self.cold()
