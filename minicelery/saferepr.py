"""``saferepr``: a ``repr`` that never fails and stops at a size bound, for headers and log lines.

A task message carries ``argsrepr``/``kwargsrepr``, Celery's ``saferepr`` of the arguments cut to 1024
characters, and the worker logs each return value the same way (Celery's ``resultrepr_maxsize``), so a
20 MB result gives a 1 KB log line. The text is written piece by piece and writing stops once the bound is
passed: a huge string, list or dict costs about ``maxlen`` of work, never its own size.

Celery's counterpart is ``celery.utils.saferepr``. Like it, strings are always in single quotes (only an
inner ``'`` is escaped, control characters are kept), numbers print with ``str``, bytes print as text
(or hex when not UTF-8), and containers nested ``maxlevels`` deep print as ``[...]``. Unlike it, a text
over ``maxlen`` is cut at exactly ``maxlen`` characters plus ``...`` (Celery stops between tokens and
closes the open brackets), so the two differ only for texts that are cut either way.
"""

from __future__ import annotations

import codecs
import decimal
import numbers
from typing import Any

__all__ = ["safe_repr", "saferepr"]


def saferepr(obj: Any, maxlen: int | None = None, maxlevels: int = 3) -> str:
    """Celery's ``saferepr(obj, maxlen)``: the text of ``obj``, at most ``maxlen`` characters plus ``...``.

    Never raises: an object whose ``repr`` fails shows as ``<Unrepresentable ...>``, a container that
    holds itself as ``<Recursion on list with id=...>``.
    """
    out = _Text(maxlen)
    _write(out, obj, 0, maxlevels, set())
    text = "".join(out.parts)
    return text if maxlen is None or len(text) <= maxlen else text[:maxlen] + "..."


def safe_repr(obj: Any) -> str:
    """``repr(obj)``, or ``<Unrepresentable ...>`` when that raises (kombu's ``safe_repr``)."""
    try:
        return repr(obj)
    except Exception as exc:
        return f"<Unrepresentable {type(obj)!r}{id(obj):#x}: {exc!r}>"


class _Text:
    """The pieces written so far, and how many more characters are worth writing."""

    def __init__(self, maxlen: int | None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.maxlen = maxlen

    def room(self) -> int | None:
        """Characters still wanted: one past the bound, so that a cut shows; None for no bound."""
        return None if self.maxlen is None else max(0, self.maxlen + 1 - self.size)

    def full(self) -> bool:
        return self.maxlen is not None and self.size > self.maxlen

    def write(self, piece: str) -> None:
        self.parts.append(piece)
        self.size += len(piece)


def _write(out: _Text, obj: Any, depth: int, maxlevels: int, seen: set[int]) -> None:
    # Everything written before `out` is full is exactly the start of the whole text; what is written
    # after lies past the bound and is cut, so stopping early never changes the result.
    if isinstance(obj, str):
        room = out.room()
        out.write("'" + obj[:room].replace("'", "\\'") + "'")
    elif isinstance(obj, (bytes, bytearray)):
        out.write(f"b'{_bytes_text(obj, out.room())}'")
    elif isinstance(obj, (list, tuple, dict, set, frozenset)):
        _write_container(out, obj, depth, maxlevels, seen)
    elif isinstance(obj, numbers.Number) and not isinstance(obj, decimal.Decimal):
        out.write(_safe_str(obj))  # Celery prints numbers with str(): True, 1.5, 10
    else:
        out.write(safe_repr(obj))


def _write_container(out: _Text, obj: Any, depth: int, maxlevels: int, seen: set[int]) -> None:
    opener, closer = _brackets(obj)
    if not opener:  # an empty set or frozenset: 'set()'
        out.write(closer)
        return
    if maxlevels and depth >= maxlevels:
        out.write(f"{opener}...{closer}")
        return
    if id(obj) in seen:
        out.write(f"<Recursion on {type(obj).__name__} with id={id(obj)}>")
        return
    seen.add(id(obj))
    out.write(opener)
    is_dict = isinstance(obj, dict)
    for index, item in enumerate(obj.items() if is_dict else obj):
        if out.full():
            break
        if index:
            out.write(", ")
        if is_dict:  # a key starts afresh, as in Celery: its own depth, its own recursion guard
            _write(out, item[0], 0, maxlevels, set())
            out.write(": ")
            _write(out, item[1], depth + 1, maxlevels, seen)
        else:
            _write(out, item, depth + 1, maxlevels, seen)
    seen.discard(id(obj))
    out.write(closer)


def _brackets(obj: Any) -> tuple[str, str]:
    """``(opener, closer)`` of a container as Celery prints it; ``('', 'set()')`` for an empty set."""
    if isinstance(obj, (set, frozenset)):
        name = type(obj).__name__
        if not obj:
            return "", f"{name}()"
        return ("{", "}") if type(obj) is set else (f"{name}({{", "})")
    if isinstance(obj, tuple):
        return "(", ",)" if len(obj) == 1 else ")"
    if isinstance(obj, dict):
        return "{", "}"
    return "[", "]"


def _safe_str(number: Any) -> str:
    try:
        return str(number)
    except Exception:  # e.g. an int past sys.get_int_max_str_digits()
        return f"<Unrepresentable {type(number)!r}{id(number):#x}>"


def _bytes_text(value: bytes | bytearray, room: int | None) -> str:
    """Bytes as UTF-8 text, else as hex; only the first ``room`` characters' worth is looked at."""
    shown = value if room is None else value[:room * 4]
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # a cut may fall inside a character: the decoder keeps those bytes back instead of failing
        return decoder.decode(shown, final=len(shown) == len(value))
    except UnicodeDecodeError:
        return (shown if room is None else value[:room]).hex()
