"""The worker's revoked task ids: a set bounded in size and in time.

Every id a ``revoke`` names is kept, known or not (the message may arrive later), oldest first. The set
forgets an id after ``expires`` seconds and, past ``maxlen`` ids, the oldest ones first, so a worker that
is told to revoke millions of ids keeps a fixed amount of memory. Re-revoking an id renews it. Memory
only: a restarted worker forgets, as Celery's does without ``--statedb``. Celery's counterpart is
``kombu.utils.functional.LimitedSet`` used as ``celery.worker.state.revoked``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

__all__ = ["RevokedSet", "REVOKES_MAX", "REVOKE_EXPIRES"]

#: Celery's bounds (``celery.worker.state``): 50,000 ids, each kept three hours.
REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0


class RevokedSet:
    """Ids in the order they were (last) revoked, at most ``maxlen`` of them, each for ``expires`` seconds.

    Args:
        maxlen: the most ids kept; the oldest go first.
        expires: seconds an id is kept (None: until pushed out by ``maxlen``).
        clock: the time source (monotonic seconds), replaceable for tests.
    """

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float | None = REVOKE_EXPIRES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen, self.expires, self._clock = maxlen, expires, clock
        self._ids: OrderedDict[str, float] = OrderedDict()  # id → when it was revoked

    def add(self, task_id: str) -> None:
        """Revoke ``task_id`` now (again: it moves to the newest place)."""
        self._ids.pop(task_id, None)
        self._ids[task_id] = self._clock()
        self._purge()

    def update(self, task_ids: Iterable[str]) -> None:
        """Revoke every id of ``task_ids``, in order."""
        for task_id in task_ids:
            self.add(task_id)

    def __contains__(self, task_id: object) -> bool:
        if not self._ids:  # the common case on the task path: nothing was ever revoked
            return False
        self._purge()
        return task_id in self._ids

    def __len__(self) -> int:
        self._purge()
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        self._purge()
        return iter(list(self._ids))

    def _purge(self) -> None:
        """Forget expired ids, then the oldest beyond ``maxlen`` (the dict is ordered by revocation time)."""
        if self.expires is not None:
            limit = self._clock() - self.expires
            while self._ids:
                oldest, when = next(iter(self._ids.items()))
                if when > limit:
                    break
                del self._ids[oldest]
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)
