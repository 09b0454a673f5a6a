"""The filesystem result backend, ``file:///path``: one file per result, in Celery's on-disk format.

Each result is the file ``celery-task-meta-<task_id>`` in the directory, holding the result meta encoded
with ``result_serializer`` (JSON by default, UTF-8, no newline): the very bytes an rpc reply would carry.
A Celery client and a minicelery worker (or the other way round) sharing the directory read each other's
results. ``GroupResult.save()`` writes ``celery-taskset-meta-<group_id>`` = ``{"result": <as_tuple>}``.
Readers poll (``supports_native_join`` is False). Chords work on it through ``celery.chord_unlock``
(:mod:`.builtins`). Celery's counterpart is ``celery.backends.filesystem.FilesystemBackend``; left out
are ``forget``/``cleanup`` and the URL forms with a host.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import unquote, urlparse

from . import serialization, states
from .backends import ResultBackend
from .exceptions import ImproperlyConfigured, TimeoutError
from .message import new_task_id

__all__ = ["FilesystemBackend"]

#: Celery's key prefixes, which are the file names.
TASK_PREFIX = "celery-task-meta-"
GROUP_PREFIX = "celery-taskset-meta-"


class FilesystemBackend(ResultBackend):
    """Results as files in one directory, shared by every client and worker that names it.

    Raises:
        ImproperlyConfigured: the URL has no path, or the directory does not exist or is not writable.
    """

    supports_chords = True
    supports_native_join = False

    def __init__(self, app: Any, url: str) -> None:
        super().__init__(app)
        self.url = url
        path = unquote(urlparse(url).path)
        if not path:
            raise ImproperlyConfigured(f"The file:// result backend needs a directory: {url!r} "
                                       "(write it as file:///absolute/path).")
        self.path = path
        self._probe()

    def _probe(self) -> None:
        """Write and delete a probe file now, so a bad directory fails at start-up (Celery does too)."""
        probe = os.path.join(self.path, f".fs-backend-{new_task_id()}")
        try:
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise ImproperlyConfigured(f"The file:// result backend cannot write to {self.path!r} ({exc}); "
                                       "create the directory (shared by clients and workers) first.") \
                from exc

    def _file(self, prefix: str, key: str) -> str:
        if not key or "/" in key or key in (".", ".."):
            raise ValueError(f"not a valid result id: {key!r}")
        return os.path.join(self.path, prefix + key)

    def prepare(self, reply_to: str, consume: bool = True) -> None:
        """Nothing to prepare: results are files."""

    def store_encoded(self, task_id: str, body: bytes) -> None:
        """Write an encoded result meta as ``celery-task-meta-<task_id>`` (atomically: readers poll)."""
        target = self._file(TASK_PREFIX, task_id)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(body)
        os.replace(temporary, target)

    def store_meta(self, task_id: str, meta: dict[str, Any]) -> None:
        """Encode a result meta with ``result_serializer`` and store it."""
        self.store_encoded(task_id, serialization.dumps(meta, self.app.conf.result_serializer)[2])

    def get_meta(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta of ``task_id``, or None while there is none (PENDING)."""
        return self._read(self._file(TASK_PREFIX, task_id))

    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as handle:
                body = handle.read()
        except FileNotFoundError:
            return None
        # The file holds the bytes only: its content type is the result serializer's, as in Celery.
        content_type, encoding, _ = serialization.dumps(None, self.app.conf.result_serializer)
        meta = serialization.loads(body, content_type, encoding, accept=[content_type])
        return meta if isinstance(meta, dict) else None

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Poll the file every ``interval`` seconds until the task is ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            meta = self.get_meta(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))

    def save_group(self, group_id: str, result: Any) -> Any:
        """Store a ``GroupResult`` as ``celery-taskset-meta-<id>``: ``{"result": <as_tuple>}``."""
        body = serialization.dumps({"result": result.as_tuple()}, self.app.conf.result_serializer)[2]
        path = self._file(GROUP_PREFIX, group_id)
        with open(path, "wb") as handle:
            handle.write(body)
        return result

    def restore_group(self, group_id: str) -> Any:
        """The ``GroupResult`` saved under ``group_id``, or None."""
        from .resultset import result_from_tuple  # a lower layer's module, loaded when first needed

        meta = self._read(self._file(GROUP_PREFIX, group_id))
        return result_from_tuple(meta["result"], self.app) if meta else None

