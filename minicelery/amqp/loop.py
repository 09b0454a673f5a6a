"""The worker's event loop, which pika's ``SelectConnection`` runs on instead of its own.

pika lets an application hand a ``SelectConnection`` the I/O loop it should use (``custom_ioloop``, any
object with the ``AbstractSelectorIOLoop`` interface of ``pika.adapters.utils.selector_ioloop_adapter``:
``add_handler``, ``call_later``, ``add_callback``, ``start``/``stop``...). minicelery gives it this small
one, so that the worker can run the loop one step at a time (:meth:`Loop.run_once`) with the pool's
descriptor in the same selector: one ``select()`` wakes for a delivery, a finished job, a heartbeat
timer or a deadline, and nothing is set up again between two waits. Just before it waits, the loop runs
what asked to go last in a step (:meth:`Loop.before_wait`): the connection's socket sends the step's
frames there, in one system call (:mod:`minicelery.amqp.stream`).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import selectors
import time
from collections.abc import Callable

__all__ = ["Loop"]


class _Timer:
    """A callback due at a monotonic time; ``remove_timeout`` cancels it in place."""

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False


class Loop:
    """A selector, timers and a thread-safe callback queue: what pika needs of an I/O loop."""

    READ, WRITE, ERROR = 1, 4, 8  # pika combines these with | and &; the values are ours to choose

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._callbacks: collections.deque[Callable[[], None]] = collections.deque()
        self._before_wait: list[Callable[[], None]] = []
        # A pipe to wake a select() from another thread (pika resolves host names on a thread).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False

    # -- what pika calls ----------------------------------------------------------------------------

    def add_handler(self, fd: int, handler: Callable[[int, int], None], events: int) -> None:
        """Call ``handler(fd, events)`` whenever ``fd`` is ready for ``events`` (READ, WRITE)."""
        self._selector.register(fd, _mask(events), handler)

    def update_handler(self, fd: int, events: int) -> None:
        """Watch ``fd`` for other ``events``."""
        self._selector.modify(fd, _mask(events), self._selector.get_key(fd).data)

    def remove_handler(self, fd: int) -> None:
        """Stop watching ``fd``."""
        self._selector.unregister(fd)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        """Call ``callback`` after ``delay`` seconds; return a handle for :meth:`remove_timeout`."""
        timer = _Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def remove_timeout(self, timer: _Timer) -> None:
        """Cancel a timer from :meth:`call_later` (one already run or cancelled is fine)."""
        timer.cancelled = True

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop's next step; safe from any thread."""
        self._callbacks.append(callback)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the loop is woken already

    add_callback_threadsafe = add_callback

    def start(self) -> None:
        """Run steps until :meth:`stop` (pika calls this only when it runs the loop itself)."""
        self._stopping = False
        while not self._stopping:
            self.run_once(None)

    def stop(self) -> None:
        """Make :meth:`start` return after the current step."""
        self._stopping = True

    def close(self) -> None:
        """Release the selector and the wake-up pipe (once; closing again does nothing)."""
        if self._wake_r < 0:
            return
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def writing(self) -> bool:
        """Whether a descriptor is watched for writability: a socket whose kernel buffer was full still
        has output to send."""
        return any(key.events & selectors.EVENT_WRITE for key in self._selector.get_map().values())

    def before_wait(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, the next time the loop is about to wait (from the loop's thread only)."""
        self._before_wait.append(callback)

    def run_before_wait(self) -> None:
        """Run now what waits for the loop to wait (a client's publish sends its frames without waiting)."""
        if self._before_wait:
            waiting, self._before_wait = self._before_wait, []
            for callback in waiting:
                callback()

    # -- what the worker calls ----------------------------------------------------------------------

    def run_once(self, timeout: float | None) -> None:
        """Run what waits for the loop to wait (:meth:`before_wait`), wait up to ``timeout`` s (None:
        until something happens) or until the next timer, then run the handlers of the ready
        descriptors, the due timers and the queued callbacks."""
        self.run_before_wait()
        if self._callbacks:
            timeout = 0.0
        elif self._timers:
            due = max(0.0, self._timers[0][0] - time.monotonic())
            timeout = due if timeout is None else min(timeout, due)
        for key, mask in self._selector.select(timeout):
            if key.data is None:  # the wake-up pipe
                while _drain(self._wake_r):
                    pass
            else:
                key.data(key.fd, (self.READ if mask & selectors.EVENT_READ else 0)
                         | (self.WRITE if mask & selectors.EVENT_WRITE else 0))
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                timer.callback()
        for _ in range(len(self._callbacks)):  # those queued meanwhile wait for the next step
            self._callbacks.popleft()()


def _mask(events: int) -> int:
    """pika's READ/WRITE/ERROR as a selector mask (an error shows as readable or writable)."""
    return (selectors.EVENT_READ if events & Loop.READ else 0) | \
        (selectors.EVENT_WRITE if events & (Loop.WRITE | Loop.ERROR) else 0)


def _drain(fd: int) -> bool:
    """Read what the wake-up pipe holds; False once it is empty."""
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False
