"""Values on the wire: the json and msgpack codecs and ``accept``.

The bytes are kombu's, so Celery peers read ours and we read theirs: JSON with Python's default separators
and ``ensure_ascii``, where types JSON lacks travel wrapped (``{"__type__": "datetime", "__value__": ...}``,
likewise date, time, decimal, uuid, bytes/base64), and msgpack with ``use_bin_type=True``. A message with
no content type is kombu's trusted ``application/data``: handed back undecoded (text, or bytes if binary).
Counterparts: ``kombu.serialization`` and ``kombu.utils.json``. Left out: pickle and yaml, refused whatever
``accept`` says (unpickling broker data runs the sender's code); custom serializers and JSON types; ``raw``.
Exceptions as values live beside the result message in :mod:`minicelery.protocol`, and ``saferepr`` in
:mod:`minicelery.saferepr`.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from collections.abc import Callable, Collection
from typing import Any

from .exceptions import ContentDisallowed, DecodeError, EncodeError, ImproperlyConfigured

__all__ = ["SERIALIZERS", "accepted", "check_accepted", "dumps", "loads"]

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"
YAML = "application/x-yaml"

#: The serializers minicelery encodes with: name -> (content_type, content_encoding).
SERIALIZERS: dict[str, tuple[str, str]] = {"json": (JSON, "utf-8"), "msgpack": (MSGPACK, "binary")}
#: Every name kombu knows, so that ``accept_content=['pickle']`` is understood (and refused), not a typo.
_NAME_TO_TYPE = {"json": JSON, "msgpack": MSGPACK, "pickle": PICKLE, "yaml": YAML}
_TYPE_TO_NAME = {ctype: name for name, ctype in _NAME_TO_TYPE.items()}
#: Content types that kombu hands over without deserializing them, whatever ``accept`` says.
_TRUSTED = frozenset({"application/data", "application/text"})
#: Never decoded, even when ``accept`` names them (pickle runs code on load; yaml is not installed).
_NEVER_DECODED = frozenset({PICKLE, YAML})
#: Content encodings kombu leaves as bytes instead of decoding to text.
_BINARY_ENCODINGS = frozenset({"binary", "ascii-8bit"})


def dumps(obj: Any, serializer: str) -> tuple[str, str, bytes]:
    """Encode ``obj`` with the named serializer.

    Returns:
        ``(content_type, content_encoding, body)``, e.g. ``('application/json', 'utf-8', b'[1, 2]')``.

    Raises:
        ImproperlyConfigured: the serializer is not ``'json'`` or ``'msgpack'``.
        EncodeError: ``obj`` holds a value the serializer cannot encode (nothing has been sent).
    """
    if serializer == "json":
        try:
            return JSON, "utf-8", _JSON_ENCODER.encode(obj).encode("utf-8")
        except Exception as exc:  # like kombu: whatever goes wrong while encoding is an EncodeError
            raise EncodeError(exc) from exc
    if serializer == "msgpack":
        import msgpack  # loaded on first use: test_layers keeps third-party modules out of a bare import

        try:
            return MSGPACK, "binary", msgpack.packb(obj, use_bin_type=True)
        except Exception as exc:
            raise EncodeError(exc) from exc
    why = "minicelery never sends or decodes it" if serializer in ("pickle", "yaml") else "unknown"
    raise ImproperlyConfigured(f"Serializer {serializer!r} is not supported ({why}); use json or msgpack.")


def loads(body: bytes | str, content_type: str | None, content_encoding: str | None,
          accept: Collection[str]) -> Any:
    """Decode a message body, after checking that its content type is in ``accept`` (names or types).

    ``content_encoding`` matters only for a body that is not deserialized (a missing content type means
    ``application/data``): ``binary`` keeps it as bytes, anything else decodes it to text.

    Raises:
        ContentDisallowed: the content type is not accepted (pickle and yaml never are).
        DecodeError: the body cannot be decoded; the original error is its argument and cause.
    """
    check_accepted(content_type, accept)
    decode = _DECODERS.get(content_type or "application/data")
    try:
        if decode is not None:
            return decode(body)
        return _undecoded(body, content_encoding)
    except Exception as exc:  # like kombu: a decoder can fail in many ways, all of them a DecodeError
        raise DecodeError(exc) from exc


def check_accepted(content_type: str | None, accept: Collection[str]) -> None:
    """Refuse a content type that :func:`loads` would refuse, without decoding anything.

    Raises:
        ContentDisallowed: with kombu's text, e.g. ``Refusing to deserialize untrusted content of type
            pickle (application/x-python-serialize)``.
    """
    ctype = content_type or "application/data"
    if ctype not in _TRUSTED and ctype not in accepted(accept):
        name = _TYPE_TO_NAME.get(ctype, ctype)
        raise ContentDisallowed(f"Refusing to deserialize untrusted content of type {name} ({ctype})")


def accepted(accept: Collection[str]) -> frozenset[str]:
    """Normalise ``accept_content`` to the set of content types minicelery will decode.

    Names become content types (``'json'`` → ``'application/json'``); content types are kept; pickle
    and yaml are dropped, so a message of either type is always refused.

    Raises:
        ImproperlyConfigured: a name (an entry without ``/``) that is not a known serializer.
    """
    if isinstance(accept, str):  # accept_content='json' is a common slip; kombu would iterate letters
        accept = (accept,)
    types = set()
    for entry in accept:
        if "/" not in entry and entry not in _NAME_TO_TYPE:
            raise ImproperlyConfigured(f"Unknown serializer {entry!r} in accept_content. "
                                       "Use 'json', 'msgpack' or a content type such as 'application/json'.")
        types.add(_NAME_TO_TYPE.get(entry, entry))
    return frozenset(types - _NEVER_DECODED)


#: kombu's JSON wrappers: (type, marker, encoder); datetime before date, as a datetime is a date.
_JSON_WRAPPERS: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (datetime.datetime, "datetime", datetime.datetime.isoformat),
    (datetime.date, "date", datetime.date.isoformat),
    (datetime.time, "time", datetime.time.isoformat),
    (decimal.Decimal, "decimal", str),
    (uuid.UUID, "uuid", lambda value: {"hex": value.hex, "version": value.version}),
)


def _json_default(obj: Any) -> Any:
    """Encode what JSON has no type for, the way kombu does, so Celery decodes it to the same value."""
    for cls, marker, encode in _JSON_WRAPPERS:
        if isinstance(obj, cls):
            return {"__type__": marker, "__value__": encode(obj)}
    if isinstance(obj, bytes):  # as text when it is UTF-8, else as base64
        try:
            return {"__type__": "bytes", "__value__": obj.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(obj).decode("ascii")}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _uuid(value: dict[str, Any]) -> Any:
    return uuid.UUID(hex=value["hex"], version=value.get("version"))


#: The inverse of _json_default, keyed by ``__type__``.
_JSON_TYPES: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.datetime.fromisoformat,
    "date": lambda value: datetime.datetime.fromisoformat(value).date(),
    "time": datetime.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": _uuid,
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value.encode("utf-8")),
}


def _json_object_hook(obj: dict[str, Any]) -> Any:
    # kombu unwraps an object only when its keys are exactly __type__ and __value__.
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        decode = _JSON_TYPES.get(obj["__type__"])
        if decode is None:
            raise ValueError(f"Unsupported __type__ {obj['__type__']!r} in a JSON body")
        return decode(obj["__value__"])
    return obj


# Python's defaults otherwise (', ' and ': ' separators, ensure_ascii), which are kombu's too.
_JSON_ENCODER = json.JSONEncoder(default=_json_default)
_JSON_DECODER = json.JSONDecoder(object_hook=_json_object_hook)


def _json_loads(body: bytes | str) -> Any:
    text = body if isinstance(body, str) else bytes(body).decode("utf-8")  # kombu reads JSON as UTF-8
    return _JSON_DECODER.decode(text)


def _msgpack_loads(body: bytes | str) -> Any:
    import msgpack  # loaded on first use, like dumps

    return msgpack.unpackb(body, raw=False)


_DECODERS: dict[str, Callable[[bytes | str], Any]] = {JSON: _json_loads, MSGPACK: _msgpack_loads}


def _undecoded(body: bytes | str, content_encoding: str | None) -> bytes | str:
    # A trusted or unknown-but-accepted type: kombu hands it over as text, or as bytes when binary.
    encoding = (content_encoding or "utf-8").lower()
    if isinstance(body, str) or encoding in _BINARY_ENCODINGS:
        return body
    return bytes(body).decode(encoding)
