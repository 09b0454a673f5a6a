"""``Signal``: a list of receivers called when something happens, such as ``app.on_after_configure``.

Celery users hook into an app with ``@app.on_after_configure.connect`` (``sender`` is the app) to call
``sender.add_periodic_task(...)``. Celery's counterpart is ``celery.utils.dispatch.Signal``; differences:
receivers are held by strong references (Celery's default is weak ones), and there are no global
signals (``celery.signals``) yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Signal"]

logger = logging.getLogger(__name__)


class Signal:
    """Receivers to call with ``(signal=..., sender=..., **named)`` when :meth:`send` is called.

    Args:
        name: a name for the signal, shown in its repr (``'app.on_after_configure'``).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.receivers: list[tuple[Any, Any, Callable[..., Any]]] = []  # (lookup key, sender, receiver)

    def connect(self, receiver: Callable[..., Any] | None = None, *, sender: Any = None,
                weak: bool = True, dispatch_uid: Any = None) -> Any:
        """Add ``receiver`` (also usable as ``@signal.connect`` or ``@signal.connect(sender=app)``).

        With ``sender``, the receiver only hears that sender. A receiver (or ``dispatch_uid``) connected
        twice is called once. ``weak`` is accepted for Celery's sake; references are always strong.
        """
        if receiver is None:
            return lambda fun: self.connect(fun, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        key = (dispatch_uid if dispatch_uid is not None else id(receiver), id(sender))
        if all(known != key for known, _, _ in self.receivers):
            self.receivers.append((key, sender, receiver))
        return receiver

    def disconnect(self, receiver: Callable[..., Any] | None = None, *, sender: Any = None,
                   dispatch_uid: Any = None) -> bool:
        """Remove a receiver; True if it was connected."""
        key = (dispatch_uid if dispatch_uid is not None else id(receiver), id(sender))
        before = len(self.receivers)
        self.receivers = [entry for entry in self.receivers if entry[0] != key]
        return len(self.receivers) != before

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver for ``sender``; return ``[(receiver, response), ...]``.

        As in Celery, a receiver that raises is logged (with its traceback) and the others still run;
        its response is the exception.
        """
        responses: list[tuple[Callable[..., Any], Any]] = []
        for _, wanted, receiver in list(self.receivers):
            if wanted is not None and wanted is not sender:
                continue
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:  # noqa: BLE001 - one bad receiver must not stop the others
                logger.exception("Signal handler %r raised: %r", receiver, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"
