"""Reading Celery's task message (protocol version 2), and the result message the rpc backend sends back.

A worker reads a task message in two steps: :func:`parse_headers` checks the headers in the main
process, and :func:`decode_body` decodes the ``[args, kwargs, embed]`` body in the child that runs the
task. :meth:`TaskHeaders.request_fields` is the request context a run sees (``task.request``). A result
message is :func:`result_meta`; an exception in it travels as a dict made by :func:`exception_to_meta` and
is rebuilt by :func:`meta_to_exception`. Building a task message is :mod:`minicelery.message`; see
``docs/protocol.md``.

Celery's counterparts are ``celery.worker.request``/``strategy`` (reading) and ``celery.backends.rpc``
with ``base.Backend`` (``_get_result_meta``, ``prepare_exception``, ``exception_to_python``). Left out:
protocol 1, which Celery still reads (it is refused here with a message that says so).
"""

from __future__ import annotations

import datetime
import functools
import math
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from . import exceptions, serialization, states
from .compression import decompress
from .exceptions import EncodeError, InvalidTaskError, SecurityError
from .saferepr import safe_repr

__all__ = [
    "TaskHeaders", "aware", "decode_body", "exception_to_meta", "meta_to_exception", "parse_headers",
    "parse_iso", "read_time_limit", "result_meta",
]

UTC = datetime.UTC


def aware(when: datetime.datetime) -> datetime.datetime:
    """``when`` with a time zone: a naive datetime is read as UTC, as Celery reads one."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_iso(value: str) -> datetime.datetime:
    """Parse an ISO-8601 ``eta``/``expires``/``date_done`` to an aware datetime; naive means UTC.

    Raises:
        ValueError: not an ISO-8601 date and time.
    """
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return aware(datetime.datetime.fromisoformat(value))


@dataclass(frozen=True, slots=True)
class TaskHeaders:
    """What a worker reads from a task message before the body: checked headers and properties."""

    task: str
    id: str
    eta: datetime.datetime | None
    expires: datetime.datetime | None
    retries: int
    timelimit: tuple[float | None, float | None]  # (hard, soft)
    root_id: str | None
    parent_id: str | None
    group: str | None
    group_index: int | None
    shadow: str | None
    argsrepr: str | None
    kwargsrepr: str | None
    origin: str | None
    ignore_result: bool
    reply_to: str | None
    correlation_id: str
    priority: int | None
    headers: dict[str, Any]  # every header as received, the caller's custom ones included

    def request_fields(self) -> dict[str, Any]:
        """The request context a run of this task sees as ``task.request``, from its headers.

        ``eta`` and ``expires`` are the header texts, as in Celery. The worker adds ``delivery_info``;
        the child that runs the task adds ``args``, ``kwargs`` and ``hostname``.
        """
        return {"id": self.id, "retries": self.retries, "root_id": self.root_id, "parent_id": self.parent_id,
                "group": self.group, "origin": self.origin, "reply_to": self.reply_to,
                "correlation_id": self.correlation_id, "eta": self.headers.get("eta"),
                "expires": self.headers.get("expires"), "timelimit": self.timelimit,
                "ignore_result": self.ignore_result, "argsrepr": self.argsrepr,
                "kwargsrepr": self.kwargsrepr, "headers": self.headers}


_PROTOCOL_1 = (": this is not a protocol 2 task message. Celery's protocol 1, which carries the task in "
               "the body, is not supported; send with task_protocol=2 (Celery's default).")


def parse_headers(headers: Mapping[str, Any] | None,
                  properties: Mapping[str, Any] | None = None) -> TaskHeaders:
    """Check a received message's headers and read them, with ``eta``/``expires`` as aware datetimes.

    Raises:
        InvalidTaskError: ``task`` or ``id`` is missing or not a string, or a header has the wrong type.
    """
    headers = dict(headers or {})
    properties = properties or {}
    _check_depth(headers)
    task = _required(headers, "task")
    task_id = _required(headers, "id")
    return TaskHeaders(
        task=task, id=task_id, eta=_header_time(headers, "eta"), expires=_header_time(headers, "expires"),
        retries=_header_int(headers, "retries"), timelimit=_timelimit(headers.get("timelimit")),
        root_id=headers.get("root_id"), parent_id=headers.get("parent_id"), group=headers.get("group"),
        group_index=headers.get("group_index"), shadow=headers.get("shadow"),
        argsrepr=headers.get("argsrepr"), kwargsrepr=headers.get("kwargsrepr"),
        origin=headers.get("origin"), ignore_result=bool(headers.get("ignore_result", False)),
        reply_to=properties.get("reply_to") or None,
        correlation_id=properties.get("correlation_id") or task_id,
        priority=properties.get("priority"), headers=headers,
    )


#: How deeply header values may nest; Celery's own headers nest three levels at most (``stamps``).
MAX_HEADER_DEPTH = 32


def _check_depth(headers: Mapping[str, Any]) -> None:
    """Refuse headers nested deeper than :data:`MAX_HEADER_DEPTH`, without recursing: thousands of levels
    would otherwise stop whatever walks them (a repr, a pickle) with ``RecursionError``. Decoded field
    tables are dicts and arrays lists: checking the exact types takes a third of the time an ABC takes."""
    stack: list[tuple[Any, int]] = [(headers, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_HEADER_DEPTH:
            raise InvalidTaskError(f"Headers nest deeper than {MAX_HEADER_DEPTH} levels")
        inner = value.values() if isinstance(value, dict) else value
        stack.extend([(item, depth + 1) for item in inner if isinstance(item, (dict, list, tuple))])


def _required(headers: Mapping[str, Any], key: str) -> str:
    value = headers.get(key)
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise InvalidTaskError(f"Missing required header {key!r}" + (_PROTOCOL_1 if key == "task" else ""))
    raise InvalidTaskError(f"Header {key!r} must be a non-empty string, got {type(value).__name__} "
                           f"{value!r:.100}")


def _header_time(headers: Mapping[str, Any], key: str) -> datetime.datetime | None:
    value = headers.get(key)
    if value is None:
        return None
    reason = f"a {type(value).__name__}"
    if isinstance(value, str):
        try:
            when = parse_iso(value)
            when.astimezone(UTC)  # a time that cannot be told in UTC (year 1 at +05:00) cannot be compared
            return when
        except (ValueError, OverflowError) as exc:
            reason = str(exc)
    raise InvalidTaskError(f"Header {key!r} must be an ISO-8601 date and time, got {value!r:.100} ({reason})")


def _header_int(headers: Mapping[str, Any], key: str) -> int:
    value = headers.get(key) or 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidTaskError(f"Header {key!r} must be an integer, got {type(value).__name__} {value!r:.100}")


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return read_time_limit(value[0]), read_time_limit(value[1])
        except ValueError as exc:
            raise InvalidTaskError(f"Header 'timelimit' must be [hard, soft] seconds (0 or null: no limit): "
                                   f"{exc}") from None
    raise InvalidTaskError(f"Header 'timelimit' must be [hard, soft] seconds or nulls, got {value!r:.100}")


def read_time_limit(value: Any) -> float | None:
    """A time limit as Celery reads one: seconds, where None and 0 both mean no limit.

    Raises:
        ValueError: a negative, NaN or infinite number, or something that is not a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a time limit must be a number of seconds, got {type(value).__name__} "
                         f"{value!r:.100}")
    try:
        usable = math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        usable = False
    if not usable:
        raise ValueError(f"a time limit must be a finite number of seconds, 0 or more, got {value!r:.100}")
    return value or None


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None,
                accept: Collection[str], compression: str | None = None,
                ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Decode and check a task body: ``(args, kwargs, embed)``, embed ``{}`` when the message had null.

    ``compression`` is the message's ``compression`` header (kombu's ``application/x-gzip``...); the body
    is decompressed first, up to ``compression.MAX_DECOMPRESSED_SIZE`` bytes.

    Raises:
        ContentDisallowed: the content type is not in ``accept``.
        DecodeError: the body cannot be decompressed or decoded, or decompresses to too much.
        InvalidTaskError: the body decodes to something other than ``[list, dict, dict-or-null]``.
    """
    if compression is not None:
        serialization.check_accepted(content_type, accept)  # refuse before spending work on it
        body = decompress(body, compression)
    payload = serialization.loads(body, content_type, content_encoding, accept)
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        got = f"an array of {len(payload)}" if isinstance(payload, (list, tuple)) else type(payload).__name__
        raise InvalidTaskError(f"Task body must be a 3-element array [args, kwargs, embed], got {got}")
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)):
        raise InvalidTaskError(f"Task args (the body's first item) must be an array, "
                               f"got {type(args).__name__}")
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise InvalidTaskError("Task kwargs (the body's second item) must be an object with string keys, "
                               f"got {type(kwargs).__name__}")
    if embed is not None and not isinstance(embed, dict):
        raise InvalidTaskError(f"Task embed (the body's third item) must be an object or null, "
                               f"got {type(embed).__name__}")
    return list(args), kwargs, embed or {}


def result_meta(task_id: str, status: str, result: Any, *, traceback: str | None = None,
                children: list[Any] | None = None, date_done: datetime.datetime | str | None = None,
                parent_id: str | None = None, group_id: str | None = None,
                serializer: str = "json") -> dict[str, Any]:
    """The body of a result message, with Celery's keys in Celery's order.

    An exception ``result`` in an exception state becomes :func:`exception_to_meta`. ``date_done``
    (default: now, in UTC) is sent only for ready states and is ``None`` otherwise.
    """
    if status in states.EXCEPTION_STATES and isinstance(result, BaseException):
        result = exception_to_meta(result, serializer)
    done: str | None = None
    if status in states.READY_STATES:
        when = date_done or datetime.datetime.now(UTC)
        done = when if isinstance(when, str) else aware(when).isoformat()
    meta = {"status": status, "result": result, "traceback": traceback, "children": list(children or ()),
            "date_done": done}
    if group_id:
        meta["group_id"] = group_id
    if parent_id:
        meta["parent_id"] = parent_id
    meta["task_id"] = task_id
    return meta


#: Modules whose exceptions minicelery has its own classes for: ours, and the names they travel under.
_OUR_MODULES = frozenset({exceptions.__name__, *exceptions.WIRE_MODULES.values()})
_MISSING = object()


def exception_to_meta(exc: BaseException, serializer: str = "json") -> dict[str, Any]:
    """Describe an exception for the wire: ``{'exc_type': ..., 'exc_message': [...], 'exc_module': ...}``.

    Arguments the serializer cannot encode are replaced by their ``repr``. minicelery's own exceptions
    are reported under Celery's module names (``exceptions.WIRE_MODULES``) so Celery peers rebuild them.
    """
    cls = type(exc)
    module = cls.__module__
    if module == exceptions.__name__:
        module = exceptions.WIRE_MODULES.get(cls.__name__, module)
    return {"exc_type": cls.__qualname__, "exc_message": [_encodable(arg, serializer) for arg in exc.args],
            "exc_module": module}


def _encodable(arg: Any, serializer: str) -> Any:
    try:
        serialization.dumps(arg, serializer)
    except EncodeError:
        return safe_repr(arg)
    return arg


def meta_to_exception(meta: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception from :func:`exception_to_meta`'s dict, without importing anything.

    minicelery's own classes stand for theirs (also under Celery's module names); other classes are looked
    up in modules already imported; a missing one becomes a new ``Exception`` subclass of that name.

    Raises:
        SecurityError: the name resolves to something that is not an exception class (``os.system``).
        ValueError: ``exc_type`` is missing.
    """
    name = meta.get("exc_type")
    if not isinstance(name, str) or not name:
        raise ValueError("Exception information must include the exception type (exc_type)")
    module = meta.get("exc_module")
    module = module if isinstance(module, str) else None
    message = meta.get("exc_message", "")
    cls = _exception_class(module, name, message)
    try:
        return cls(*message) if isinstance(message, (list, tuple)) else cls(message)
    except Exception:  # its constructor wants other arguments than its args: keep name and message
        return Exception(f"{cls.__name__}({message})")


def _exception_class(module: str | None, name: str, message: Any) -> type[BaseException]:
    if module in _OUR_MODULES and name in exceptions.__all__:
        ours = getattr(exceptions, name)
        if isinstance(ours, type) and issubclass(ours, BaseException):
            return ours
    # Never import: a result names any module it likes, and importing runs that module's code.
    found: Any = sys.modules.get(module, _MISSING) if module else _MISSING
    for part in name.split("."):  # a nested class travels as 'Outer.Inner'
        found = _MISSING if found is _MISSING else getattr(found, part, _MISSING)
    if found is _MISSING:
        return _stand_in(module or "celery.exceptions", name)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise SecurityError(f"Expected an exception class, got {module}.{name} with payload {message}")
    return found


@functools.lru_cache(maxsize=128)
def _stand_in(module: str, qualname: str) -> type[Exception]:
    # Cached, so that two results carrying the same unknown exception share one class.
    return type(qualname.rpartition(".")[2], (Exception,), {"__module__": module, "__qualname__": qualname})
