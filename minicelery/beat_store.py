"""The schedule file: where beat keeps, for each entry, when it last ran and how many times it has run.

It is a small JSON document, so it never unpickles anything and a person can read it::

    {"format": "minicelery-beat-schedule", "version": 1, "tz": "Europe/Berlin", "utc_enabled": true,
     "entries": {"every-4s": {"last_run_at": "2026-12-06T12:33:48.408692+01:00", "total_run_count": 12}}}

Every write goes to a temporary file that is flushed to disk and then renamed over the old one, so a crash
in the middle of a write leaves the previous version whole. A file that is not one of ours (Celery's
``shelve`` database, which Celery writes as ``PATH`` or ``PATH.db`` or ``PATH.dat/.dir/.bak``) or that is
corrupt is refused with a :class:`ScheduleFileError` that names it; it is never deleted. Celery's
counterpart is the ``shelve`` store of ``celery.beat.PersistentScheduler``.
"""

from __future__ import annotations

import dbm
import json
import os
from datetime import datetime
from typing import Any, NamedTuple

from .exceptions import ScheduleFileError

__all__ = ["ScheduleFile", "StoredEntry", "StoredState", "FORMAT", "VERSION"]

FORMAT = "minicelery-beat-schedule"
VERSION = 1
_FIX = ("Delete it if its last-run times may be lost (every entry then starts afresh), or give beat "
        "another file with -s/--schedule or the beat_schedule_filename setting.")


class StoredEntry(NamedTuple):
    """What the file remembers of one entry."""

    last_run_at: datetime
    total_run_count: int


class StoredState(NamedTuple):
    """The whole file: the zone settings it was written under, and the entries."""

    tz: str | None
    utc_enabled: bool
    entries: dict[str, StoredEntry]


class ScheduleFile:
    """Reads and atomically writes the schedule file at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"<ScheduleFile {self.path!r}>"

    def read(self) -> StoredState | None:
        """The stored state, or None when there is no file yet.

        Raises:
            ScheduleFileError: the file is Celery's shelve database, is not JSON, or is not ours.
        """
        kind = dbm.whichdb(self.path)  # also finds Celery's dbm.dumb files PATH.dat/PATH.dir
        if kind:
            raise ScheduleFileError(
                f"The beat schedule file {self.path!r} is a Python shelve database (dbm.{kind}), as "
                f"written by Celery's beat; minicelery keeps its schedule as JSON and never unpickles. "
                f"{_FIX}")
        try:
            with open(self.path, "rb") as stream:
                raw = stream.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ScheduleFileError(f"Cannot read the beat schedule file {self.path!r}: {exc}") from exc
        return self._parse(raw)

    def _parse(self, raw: bytes) -> StoredState:
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ScheduleFileError(f"The beat schedule file {self.path!r} is not a minicelery schedule "
                                    f"(not JSON: {exc}). {_FIX}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ScheduleFileError(f"The beat schedule file {self.path!r} is JSON but not a minicelery "
                                    f"schedule (no \"format\": \"{FORMAT}\"). {_FIX}")
        if document.get("version") != VERSION:
            raise ScheduleFileError(f"The beat schedule file {self.path!r} has version "
                                    f"{document.get('version')!r}; this minicelery reads version {VERSION}.")
        entries = {}
        for name, saved in dict(document.get("entries") or {}).items():
            try:
                entries[name] = StoredEntry(datetime.fromisoformat(saved["last_run_at"]),
                                            int(saved["total_run_count"]))
            except (TypeError, KeyError, ValueError) as exc:
                raise ScheduleFileError(f"The beat schedule file {self.path!r} is corrupt: entry {name!r} "
                                        f"is {saved!r} ({exc!r}). {_FIX}") from None
        return StoredState(document.get("tz"), bool(document.get("utc_enabled", True)), entries)

    def write(self, state: StoredState) -> None:
        """Replace the file with ``state``, atomically (temporary file, fsync, rename).

        Raises:
            ScheduleFileError: the file or its directory cannot be written.
        """
        document: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "tz": state.tz, "utc_enabled": state.utc_enabled,
            "entries": {name: {"last_run_at": saved.last_run_at.isoformat(),
                               "total_run_count": saved.total_run_count}
                        for name, saved in state.entries.items()},
        }
        temporary = f"{self.path}.tmp-{os.getpid()}"
        try:
            with open(temporary, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=1, sort_keys=True)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise ScheduleFileError(f"Cannot write the beat schedule file {self.path!r}: {exc}") from exc


def _fsync_directory(path: str) -> None:
    """Flush the rename itself to disk (POSIX needs the directory synced for that)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(descriptor)
