"""A pool child's one-job queue: the job it runs next, which the main process can still take back.

Each child has one, beside its pipe, so that it goes from one job to the next without waiting for the
main process. It is a ``SOCK_SEQPACKET`` socket pair of which the main process keeps both ends. A
datagram socket hands each message whole to exactly one reader, so the main process can read a queued
job back out of the child's end ("steal" it) — for an idle child, or after the child died — and know
for sure whether the child had taken it. Celery counterpart: none; a job in one of billiard's per-child
pipes cannot be taken back, which is why Celery's ``-O fair`` writes a job only to an idle child.
"""

from __future__ import annotations

import pickle
import socket

__all__ = ["QUEUE_LIMIT", "Job", "JobQueue", "Taker"]

#: The largest pickled payload that may wait in a queue: one datagram, well under the default socket
#: buffer (about 208 KiB on Linux). Larger jobs go to idle children, on their pipe.
QUEUE_LIMIT = 64 * 1024

#: The largest datagram: the payload and the job tuple around it.
_DATAGRAM_SIZE = QUEUE_LIMIT + 4096

#: A job as the main process sends it: (number, pickled payload, whether to report its start).
Job = tuple[int, bytes, bool]


class JobQueue:
    """The main process's side of one child's queue; :attr:`child_end` goes to the child."""

    def __init__(self) -> None:
        self._put_end, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def put(self, job: Job) -> None:
        """Queue ``job`` (its payload at most :data:`QUEUE_LIMIT` bytes). Never blocks nor fails for a
        dead child: the socket lives as long as this object holds its two ends."""
        self._put_end.send(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))

    def steal(self) -> int | None:
        """Take the queued job back if the child has not; return its number (None: the queue is empty)."""
        try:
            message = self.child_end.recv(_DATAGRAM_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, OSError):
            return None
        number: int = pickle.loads(message)[0]  # our own socket: the main process pickled this job
        return number

    def close(self) -> None:
        """Close both ends (the child's copy, if it lives, is its own)."""
        self._put_end.close()
        self.child_end.close()


class Taker:
    """The child's side: takes the job waiting in its queue, if there is one, without waiting."""

    def __init__(self, child_end: socket.socket) -> None:
        self._socket = child_end
        self._buffer = bytearray(_DATAGRAM_SIZE)  # one datagram at a time, received in place

    def fileno(self) -> int:
        """The descriptor to wait on for a queued job."""
        return self._socket.fileno()

    def __call__(self) -> Job | None:
        try:
            size = self._socket.recv_into(self._buffer, _DATAGRAM_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None  # empty, or the main process stole the job back for another child
        job: Job = pickle.loads(memoryview(self._buffer)[:size])  # pickled by the main process
        return job
