"""A Lamport clock: the logical clock every app creates, used to order events between processes.

Celery's counterpart is ``kombu.clocks.LamportClock``. A worker stamps its monitoring events and remote
control replies with it and moves it past the clocks of the requests it receives (``worker/remote.py``).
"""

from __future__ import annotations

import threading

__all__ = ["LamportClock"]


class LamportClock:
    """A counter that moves forward on local events and jumps past the clocks of received ones."""

    def __init__(self, initial_value: int = 0) -> None:
        self.value = initial_value
        self._lock = threading.Lock()

    def forward(self) -> int:
        """Count a local event and return the new time."""
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        """Merge the time of a received event: ``max(ours, theirs) + 1``."""
        with self._lock:
            self.value = max(self.value, other) + 1
            return self.value

    def __repr__(self) -> str:
        return f"<LamportClock: {self.value}>"
