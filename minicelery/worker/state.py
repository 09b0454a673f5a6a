"""Where each request the worker holds stands: held for its ETA, ready, accepted, or running in a child.

A request moves one way through the stages: *held* (an ETA or countdown in the future; Celery's
"scheduled") → *ready* (Celery's "reserved") → *accepted* (given a child's place: its early ack leaves
before the child gets it) → *running* (in a child, under a job id; Celery's "active"). Pure bookkeeping,
no I/O; the consumer moves requests along. Celery's counterpart is ``celery.worker.state`` with the
timer that holds ETA tasks.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from .request import Request

__all__ = ["RequestState"]


class RequestState:
    """The requests of one worker, by stage."""

    def __init__(self) -> None:
        self.ready: deque[Request] = deque()
        self.accepted: list[Request] = []
        self.running: dict[int, Request] = {}  # job id → request
        self._held: list[tuple[float, int, Request]] = []  # (due, order, request): a heap
        self._order = itertools.count()

    @property
    def held_count(self) -> int:
        """How many requests wait for their ETA."""
        return len(self._held)

    @property
    def busy(self) -> bool:
        """True while a request is accepted or running: a warm shutdown waits for these."""
        return bool(self.accepted or self.running)

    def hold(self, request: Request, due: float) -> None:
        """Keep ``request`` until monotonic time ``due``."""
        heapq.heappush(self._held, (due, next(self._order), request))

    def held(self) -> list[Request]:
        """The requests held for their ETA, earliest first (for ``inspect scheduled``)."""
        return [item[2] for item in sorted(self._held, key=lambda item: item[:2])]

    def next_due(self) -> float | None:
        """When the first held request falls due (None: none is held)."""
        return self._held[0][0] if self._held else None

    def due(self, now: float) -> list[Request]:
        """Take the held requests whose time has come, earliest first."""
        released = []
        while self._held and self._held[0][0] <= now:
            released.append(heapq.heappop(self._held)[2])
        return released

    def accept(self, room: int) -> list[Request]:
        """Move up to ``room`` ready requests (minus those already accepted) to accepted; return them."""
        taken = []
        while self.ready and room - len(self.accepted) > 0:
            request = self.ready.popleft()
            self.accepted.append(request)
            taken.append(request)
        return taken

    def take_accepted(self) -> list[Request]:
        """Hand over every accepted request (to be submitted to the pool)."""
        taken, self.accepted = self.accepted, []
        return taken

    def waiting(self) -> list[Request]:
        """Remove and return every request not yet accepted: the ready ones, then the held ones."""
        requests = list(self.ready) + [item[2] for item in sorted(self._held)]
        self.ready.clear()
        self._held.clear()
        return requests

    def forget_unstarted(self) -> None:
        """Drop every request not running (their connection is gone: the broker redelivers them)."""
        self.waiting()
        self.accepted = []
