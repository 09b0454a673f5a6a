"""Result backends: where ``AsyncResult`` finds the state a worker reported for a task.

minicelery has one real backend, ``rpc://``: the worker publishes each state update to the reply queue
named by the task message's ``reply_to``, and the client that sent the task reads it back (spec §9.1).
Without ``result_backend`` the app gets :class:`DisabledBackend`. Celery's counterparts are
``celery.backends.rpc.RPCBackend`` with its ``ResultConsumer``, and ``celery.backends.base.DisabledBackend``.
Left out: every store (redis, database, ...), ``forget()``, groups and chords, ``on_message`` callbacks,
and the LRU result cache. The broker work (declare, consume, wait) is ``amqp.Broker``'s: no pika here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

from . import serialization, states
from .exceptions import DecodeError, ImproperlyConfigured, SecurityError, TimeoutError
from .urls import sanitize_url

__all__ = ["ResultBackend", "RPCBackend", "DisabledBackend", "backend_for", "E_NO_BACKEND"]

logger = logging.getLogger(__name__)

#: Celery's message when results are asked for and no backend is configured.
E_NO_BACKEND = "No result backend is configured.\nPlease see the documentation for more information."


def backend_for(app: Any) -> ResultBackend:
    """The backend for ``app.conf.result_backend``: None or ``''`` → disabled, ``rpc://``, ``file:///dir``.

    Raises:
        ImproperlyConfigured: any other backend (its password masked in the message).
    """
    url = app.conf.result_backend
    if not url:
        return DisabledBackend(app)
    if url == "rpc" or (isinstance(url, str) and url.startswith("rpc://")):
        return RPCBackend(app)
    if isinstance(url, str) and url.startswith("file://"):
        from .filesystem import FilesystemBackend  # here: it builds on ResultBackend, defined below

        return FilesystemBackend(app, url)
    raise ImproperlyConfigured(f"Unsupported result backend {sanitize_url(url)!r}: minicelery supports "
                               "rpc:// only, plus file:///path for a shared directory; set result_backend to "
                               "one of those, or leave it unset.")


class ResultBackend:
    """What every backend offers the sender of a task and its ``AsyncResult``.

    A *meta* is a decoded result body: ``{'status', 'result', 'traceback', 'children', 'date_done',
    'task_id', ...}`` exactly as it travelled; rebuilding an exception from it is ``AsyncResult``'s job.

    Args:
        app: the app whose configuration and broker the backend uses.
    """

    #: The backend's URL, as printed in the worker banner.
    url = ""

    def __init__(self, app: Any) -> None:
        self.app = app

    def prepare(self, reply_to: str, consume: bool = True) -> None:
        """Get ready to receive the results of a task about to be sent with ``reply_to``.

        Called by the app before it publishes a task whose result is wanted, so that no result can arrive
        before there is somewhere to put it. Must be cheap when called again and again. With
        ``consume=False`` the queue is only created, for another process to read later.
        """
        raise NotImplementedError

    def get_meta(self, task_id: str) -> dict[str, Any] | None:
        """Return the latest meta known for ``task_id``, or None if nothing has arrived; never blocks.

        A ready meta (SUCCESS, FAILURE, REVOKED) may be handed out only once: the caller keeps it.
        """
        raise NotImplementedError

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Block until a ready meta arrives for ``task_id`` and return it (handed out once).

        ``timeout`` is in seconds (None waits forever); ``interval`` is how often a polling backend looks.

        Raises:
            TimeoutError: (minicelery's, like Celery's) no ready meta arrived within ``timeout``.
        """
        raise NotImplementedError


class DisabledBackend(ResultBackend):
    """The backend of an app without ``result_backend``: results are not stored, asking for one fails."""

    url = "disabled://"

    def prepare(self, reply_to: str, consume: bool = True) -> None:
        """Do nothing: no result will be read."""

    def get_meta(self, task_id: str) -> dict[str, Any] | None:
        """Return None: the state of every task stays PENDING."""
        return None

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Raise ``NotImplementedError`` with Celery's message: there is nothing to wait on."""
        raise NotImplementedError(E_NO_BACKEND)


class RPCBackend(ResultBackend):
    """Results as AMQP messages on a reply queue per app and thread (``app.reply_queue``), as Celery does.

    Replies for every task this thread sent arrive on the one queue, in any order; those not asked for yet
    are kept (per thread) until they are, so several results can be awaited in any order. Consequences, as
    with Celery: only the sending thread can read a result, each ready result is read once, and results
    sent while the client's connection was down are lost (the auto-delete queue went with it).
    ``interval`` is ignored: the broker pushes replies, nothing polls.
    """

    url = "rpc://"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._local = threading.local()

    def _metas(self) -> dict[str, dict[str, Any]]:
        """This thread's latest meta per task id (a forked child starts empty, like its reply queue)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.metas = os.getpid(), {}
        metas: dict[str, dict[str, Any]] = local.metas
        return metas

    def _expires_ms(self) -> int | None:
        """``result_expires`` in ms, the reply queue's ``x-expires`` (spec §9.1: one day is 86400000)."""
        expires = self.app.conf.result_expires
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        return int(expires * 1000) if expires else None

    def prepare(self, reply_to: str, consume: bool = True) -> None:
        """Declare the reply queue ``reply_to`` and, unless ``consume`` is false, consume it."""
        self.app.broker.declare_reply_queue(reply_to, self._expires_ms(), consume=consume)

    def _drain(self, timeout: float | None) -> None:
        """Take what has arrived on this thread's reply queue, waiting up to ``timeout`` s for something."""
        queue = self.app.reply_queue
        self.prepare(queue)  # a result asked for before any send from this thread: consume the queue now
        metas = self._metas()
        for reply in self.app.broker.drain_replies(queue, timeout):
            meta = self._decode(reply)
            if meta is None:
                continue
            task_id = reply.correlation_id or meta.get("task_id")
            if not isinstance(task_id, str):
                logger.error("Dropped result message without a task id: %.100r", meta)
                continue
            known = metas.get(task_id)
            if known is None or known["status"] not in states.READY_STATES:  # never un-finish a task
                metas[task_id] = meta

    def _decode(self, reply: Any) -> dict[str, Any] | None:
        """The meta in a reply, or None (logged) when it cannot be decoded or is not accepted."""
        conf = self.app.conf
        try:
            meta = serialization.loads(reply.body, reply.content_type, reply.content_encoding,
                                       accept=conf.result_accept_content or conf.accept_content)
        except (SecurityError, DecodeError) as exc:
            logger.error("Dropped result message %s: %s", reply.correlation_id, exc)
            return None
        if not isinstance(meta, dict) or "status" not in meta:
            logger.error("Dropped result message %s: not a result (%.100r)", reply.correlation_id, meta)
            return None
        return meta

    def get_meta(self, task_id: str) -> dict[str, Any] | None:
        """Take what has arrived (without waiting) and return the latest meta for ``task_id``, or None."""
        self._drain(0)
        metas = self._metas()
        meta = metas.get(task_id)
        if meta is not None and meta["status"] in states.READY_STATES:
            del metas[task_id]  # handed out once; the AsyncResult keeps it
        return meta

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Wait until a ready meta for ``task_id`` arrives; keep every other reply for later."""
        metas = self._metas()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _is_ready(metas.get(task_id)):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._drain(remaining)
            if remaining == 0.0 and not _is_ready(metas.get(task_id)):
                raise TimeoutError()
        return metas.pop(task_id)


def _is_ready(meta: dict[str, Any] | None) -> bool:
    return meta is not None and meta["status"] in states.READY_STATES
