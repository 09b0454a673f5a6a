"""Durability: a segmented append-only journal with group commit, plus the durable definitions.

Layout of the data directory: ``LOCK`` (``flock``: two brokers never share a directory), ``definitions.json``
(durable exchanges, queues, bindings; rewritten atomically on each change, a rare event) and
``journal/%08d.seg``. A record is ``u32 length | u32 crc32 | payload``; payloads are ``P`` (a persistent
message enqueued in a durable queue), ``S`` (its entry settled: acked, dropped, purged, deleted) and ``D``
(its first delivery, so ``redelivered`` survives a restart). Everything recorded while a connection's read
is handled leaves in one ``os.write`` at the end of that read (records made outside a read, by a timer, at
the end of the loop turn); ``fdatasync`` runs at the end of the loop turn when a publisher confirm waits
for it (one sync for every connection read in that turn), or ``sync_interval`` after the first unsynced
record, or at shutdown — RabbitMQ's batching, with the same promise: a confirmed message is on disk; an
unconfirmed one survives ``kill -9`` once its turn ended.
A P settled before its batch was written is dropped with its S (it never touches the disk).
Compaction: sealed segments without live entries are deleted oldest first; when sealed segments hold more
than :data:`COMPACT_FACTOR` segments' worth and the oldest is under half live, its live records are copied
to the active segment (same entry ids), synced, and the old one is deleted.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .recovery import StoreError, replay_segments, restore

if TYPE_CHECKING:  # annotations only
    from .channel import Channel
    from .queue import Entry
    from .vhost import VirtualHost

log = logging.getLogger("minicelery.broker")

__all__ = ["Journal", "StoreError"]

COMPACT_FACTOR = 4
_RECORD = struct.Struct(">II")
_ID = struct.Struct(">Q")
_P_HEAD = struct.Struct(">QQI")  # entry id, expires at (wall ms, 0 = never), header length


def encode_record(payload: bytes) -> bytes:
    """One journal record: length, CRC-32 of the payload, payload."""
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def _name(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def publish_payload(entry: Entry, queue: str) -> bytes:
    """A ``P`` record's payload for ``entry`` in ``queue``."""
    message = entry.message
    expires = 0
    if entry.expires_at is not None:  # monotonic -> wall clock, which survives a restart
        expires = int((time.time() + entry.expires_at - time.monotonic()) * 1000)
    return b"".join((b"P", _P_HEAD.pack(entry.id, max(expires, 1) if expires else 0, len(message.header)),
                     _name(queue), _name(message.exchange), _name(message.routing_key), message.header,
                     message.body))


class Journal:
    """The data directory of a durable broker."""

    def __init__(self, directory: str, *, sync_interval: float = 0.2, segment_size: int = 16 << 20,
                 repair: bool = False) -> None:
        self.directory = os.path.abspath(directory)
        self.segments_dir = os.path.join(self.directory, "journal")
        self.sync_interval, self.segment_size, self.repair = sync_interval, segment_size, repair
        self.records: list[bytes | None] = []        # this read's (or turn's) records, written at its end
        self.unwritten_p: dict[int, int] = {}         # entry id -> index in records
        self.entries: dict[int, tuple[str, Entry, int]] = {}   # live journaled entries: queue, entry, segment
        self.segment_entries: dict[int, set[int]] = {}
        self.sealed: list[int] = []
        self.active = 0
        self.active_size = 0
        self.fd = -1
        self.lock_fd = -1
        self.waiters: set[Channel] = set()
        self.unsynced_since: float | None = None
        self.failed = False
        self.on_failure: Callable[[], None] | None = None  # the broker raises its resource alarm
        self._flush_scheduled = False
        self._reading = False                         # a connection's read is being handled
        self._compacting = False
        self._sync_timer: asyncio.TimerHandle | None = None

    # -- opening and recovery -------------------------------------------------------------------------
    def open(self, vhost: VirtualHost) -> None:
        """Lock the directory, load the definitions, replay the segments into ``vhost``."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # (intermediate directories get the umask's)
        os.makedirs(self.segments_dir, mode=0o700, exist_ok=True)
        self._lock()
        try:
            self._recover(vhost)
        except BaseException:
            self.close()
            raise
        self._compact()

    def _recover(self, vhost: VirtualHost) -> None:
        started = time.monotonic()
        definitions = self._load_definitions()
        numbers = sorted(int(n[:-4]) for n in os.listdir(self.segments_dir) if n.endswith(".seg"))
        paths = [self._path(n) for n in numbers]
        live = restore(vhost, definitions, replay_segments(paths, self.repair))
        for entry_id, (queue, entry, index) in live.items():
            self.entries[entry_id] = (queue, entry, numbers[index])
            self.segment_entries.setdefault(numbers[index], set()).add(entry_id)
        self.sealed = numbers
        for number in numbers:
            self.segment_entries.setdefault(number, set())
        self.active = (numbers[-1] + 1) if numbers else 1
        self._open_active()
        log.info("journal %s: recovered %d messages from %d segments in %.3f s", self.directory, len(live),
                 len(numbers), time.monotonic() - started)

    def _lock(self) -> None:
        path = os.path.join(self.directory, "LOCK")
        self.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(self.lock_fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.lock_fd)
            self.lock_fd = -1
            raise StoreError(f"the data directory {self.directory} is in use by another broker "
                             f"(pid {owner}); give each broker its own --data-dir")
        os.ftruncate(self.lock_fd, 0)
        os.write(self.lock_fd, str(os.getpid()).encode())

    def _load_definitions(self) -> dict[str, Any]:
        path = os.path.join(self.directory, "definitions.json")
        try:
            with open(path, encoding="utf-8") as file:
                return dict(json.load(file))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{path} is damaged ({exc}); restore it or move the data directory aside")

    def _path(self, number: int) -> str:
        return os.path.join(self.segments_dir, f"{number:08d}.seg")

    def _open_active(self) -> None:
        self.fd = os.open(self._path(self.active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.active_size = os.fstat(self.fd).st_size
        self.segment_entries.setdefault(self.active, set())
        _sync_directory(self.segments_dir)

    # -- recording ------------------------------------------------------------------------------------
    def publish(self, queue: str, entry: Entry) -> None:
        """Record a persistent message enqueued in a durable queue."""
        self.unwritten_p[entry.id] = len(self.records)
        self._record(publish_payload(entry, queue))
        self.entries[entry.id] = (queue, entry, self.active)
        self.segment_entries[self.active].add(entry.id)

    def settle(self, entry_id: int) -> None:
        """Record that an entry's life is over (a P still unwritten is dropped instead)."""
        live = self.entries.pop(entry_id, None)
        if live is None:
            return
        self.segment_entries[live[2]].discard(entry_id)
        index = self.unwritten_p.pop(entry_id, None)
        if index is not None:
            self.records[index] = None
        else:
            self._record(b"S" + _ID.pack(entry_id))

    def delivered(self, entry_id: int) -> None:
        """Record a first delivery (never synced on its own: ``redelivered`` is a hint)."""
        if entry_id in self.entries and entry_id not in self.unwritten_p:
            self._record(b"D" + _ID.pack(entry_id))

    def wait_for_sync(self, channel: Channel) -> None:
        """``channel`` has confirms to send once this turn's records are synced."""
        self.waiters.add(channel)
        self._schedule()

    def _record(self, payload: bytes) -> None:
        self.records.append(encode_record(payload))
        self._schedule()

    # -- batching by read -----------------------------------------------------------------------------
    def start_read(self) -> None:
        """A connection starts handling what it read: its records wait for :meth:`end_read` instead of a
        callback at the end of the loop turn (no extra loop iteration per read)."""
        self._reading = True

    def end_read(self) -> None:
        """The read is handled: write its records now. A sync that confirms wait for still runs at the end
        of the loop turn, so that the confirms of every connection read in that turn share it."""
        self._reading = False
        if self.waiters:
            self._schedule()
        elif self.records:
            self.flush()

    def _schedule(self) -> None:
        if not self._flush_scheduled and not self._reading:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - a callback must never raise into the loop
            log.exception("journal flush failed")

    # -- writing --------------------------------------------------------------------------------------
    def flush(self, *, sync: bool = False) -> None:
        """Write the records of this read (or turn) in one ``os.write``; sync if a confirm waits (or
        ``sync``)."""
        self._flush_scheduled = False
        records, self.records = self.records, []
        self.unwritten_p.clear()
        data = b"".join(filter(None, records))
        ok = True
        try:
            if data:
                self._write(data)
            if (self.waiters or sync) and self.unsynced_since is not None:
                self.sync()
        except OSError as exc:
            ok = False
            self._failed(exc)
        if self.waiters:
            waiters, self.waiters = self.waiters, set()
            for channel in waiters:
                channel.synced(ok)
                channel.connection.flush()
        if self.active_size >= self.segment_size:
            self._rotate()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            try:  # take back a partial record, so the segment stays whole (later writes append after it)
                os.ftruncate(self.fd, self.active_size)
            except OSError:
                pass
            raise
        self.active_size += len(data)
        if self.unsynced_since is None:
            self.unsynced_since = time.monotonic()
            self._sync_timer = asyncio.get_running_loop().call_later(self.sync_interval, self._timed_sync)

    def _timed_sync(self) -> None:
        self._sync_timer = None
        try:
            self.sync()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if not self.failed:
            log.error("journal write to %s failed: %s: unconfirmed messages are nacked and publishers "
                      "blocked until the broker restarts", self.directory, exc)
        self.failed = True
        if self.on_failure is not None:
            self.on_failure()

    def sync(self) -> None:
        """``fdatasync`` the active segment (the timer of the sync interval, a waiting confirm, shutdown)."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self.unsynced_since is not None and self.fd >= 0:
            os.fdatasync(self.fd)
            self.unsynced_since = None

    def _rotate(self) -> None:
        self.sync()
        os.close(self.fd)
        self.sealed.append(self.active)
        self.active += 1
        self._open_active()
        self._compact()

    def _compact(self) -> None:
        """Delete dead sealed segments oldest first; copy the live records of a sparse oldest one forward."""
        if self._compacting:
            return  # copying forward flushes, which may rotate, which compacts: once at a time
        self._compacting = True
        try:
            while self.sealed and not self.failed:
                oldest = self.sealed[0]
                live = self.segment_entries.get(oldest, set())
                if live:
                    sealed_bytes = sum(_size(self._path(n)) for n in self.sealed)
                    if sealed_bytes < COMPACT_FACTOR * self.segment_size or \
                            len(live) * 2 > len(live) + _dead_guess(self, oldest):
                        return
                    self._copy_forward(oldest, live)
                    if self.failed:
                        return  # the copies may not be on disk: keep the original
                self.sealed.remove(oldest)
                self.segment_entries.pop(oldest, None)
                try:
                    os.unlink(self._path(oldest))
                except FileNotFoundError:
                    pass
                log.debug("journal: segment %08d compacted away", oldest)
        finally:
            self._compacting = False

    def _copy_forward(self, segment: int, live: set[int]) -> None:
        for entry_id in sorted(live):
            queue, entry, _ = self.entries[entry_id]
            self.records.append(encode_record(publish_payload(entry, queue)))
            if entry.redelivered:
                self.records.append(encode_record(b"D" + _ID.pack(entry_id)))
            self.entries[entry_id] = (queue, entry, self.active)
            self.segment_entries[self.active].add(entry_id)
        live.clear()
        self.flush(sync=True)  # the copies are on disk before the old segment goes

    # -- definitions and the end ----------------------------------------------------------------------
    def save_definitions(self, definitions: dict[str, Any]) -> None:
        """Rewrite ``definitions.json`` atomically (temp file, fsync, rename, directory fsync)."""
        path = os.path.join(self.directory, "definitions.json")
        temp = path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(definitions, default=str, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        _sync_directory(self.directory)

    def close(self) -> None:
        """Write and sync what is left, close the segment, release the lock."""
        if self.fd >= 0:
            try:
                self.flush(sync=True)
            finally:
                os.close(self.fd)
                self.fd = -1
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _dead_guess(journal: Journal, segment: int) -> int:
    # Records per segment are not counted exactly: estimate the dead ones from the size of the segment
    # and the average size of its live records, which is all the 50 % rule needs.
    live = journal.segment_entries.get(segment) or set()
    if not live:
        return 0
    average = sum(len(journal.entries[i][1].message.body) + 200 for i in live) / len(live)
    return max(0, int(_size(journal._path(segment)) / average) - len(live))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

