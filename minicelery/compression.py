"""Message compression as kombu does it: the body is compressed after serializing, and a ``compression``
header names the method; the content type and encoding stay those of the serializer.

Celery sends a compressed message for ``apply_async(compression='gzip')`` or the ``task_compression``
setting. The names are kombu's: ``application/x-gzip`` (zlib's format, despite the name; aliases
``gzip`` and ``zlib``), ``application/x-bz2`` (``bzip2``, ``bzip``) and ``application/x-lzma`` (``lzma``,
``xz``). Reading never trusts the sender with memory: a body is decompressed a piece at a time and refused
once it grows past ``max_size``, so a small "zip bomb" cannot exhaust a worker.

Celery's counterpart is ``kombu.compression``. Left out: brotli and zstd, which need packages outside the
standard library (a message compressed with them is a ``DecodeError`` that names the method).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from .exceptions import DecodeError, ImproperlyConfigured

__all__ = ["MAX_DECOMPRESSED_SIZE", "compress", "content_type_of", "decompress"]

#: The largest body decompressed: 128 MiB, the largest message RabbitMQ accepts by default
#: (``max_message_size``), so a compressed message may carry what an uncompressed one could.
MAX_DECOMPRESSED_SIZE = 128 * 1024 * 1024

#: Content type → (compress, new decompressor, whether several streams may follow each other), as kombu
#: registers them; bz2 and lzma read concatenated streams, as their ``decompress`` functions do.
_METHODS: dict[str, tuple[Callable[[bytes], bytes], Callable[[], Any], bool]] = {
    "application/x-gzip": (zlib.compress, zlib.decompressobj, False),
    "application/x-bz2": (bz2.compress, bz2.BZ2Decompressor, True),
    "application/x-lzma": (lzma.compress, lzma.LZMADecompressor, True),
}
_ALIASES = {"gzip": "application/x-gzip", "zlib": "application/x-gzip", "bzip2": "application/x-bz2",
            "bzip": "application/x-bz2", "lzma": "application/x-lzma", "xz": "application/x-lzma"}


def content_type_of(name: str) -> str:
    """The content type kombu sends in the ``compression`` header for ``name`` (an alias or a type).

    Raises:
        ImproperlyConfigured: a method minicelery does not have.
    """
    found = _ALIASES.get(name, name)
    if found not in _METHODS:
        raise ImproperlyConfigured(f"Compression {name!r} is not supported; use one of "
                                   f"{', '.join(sorted(_ALIASES))} (or their content types).")
    return found


def compress(body: bytes, name: str) -> tuple[bytes, str]:
    """Compress a serialized body: ``(compressed body, value of the compression header)``.

    Raises:
        ImproperlyConfigured: an unknown method.
    """
    content_type = content_type_of(name)
    return _METHODS[content_type][0](body), content_type


def decompress(body: bytes, compression: Any, max_size: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Decompress a body whose ``compression`` header is ``compression`` (kombu's names or aliases).

    Raises:
        DecodeError: an unknown method, a corrupt or truncated body, or one that decompresses to more than
            ``max_size`` bytes (found out after decompressing at most ``max_size + 1`` bytes).
    """
    method = _METHODS.get(_ALIASES.get(compression, compression)) if isinstance(compression, str) else None
    if method is None:
        raise DecodeError(f"Cannot decompress a message with compression {compression!r:.100}: minicelery "
                          f"reads {', '.join(_METHODS)}")
    _, new_decompressor, multi_stream = method
    out = bytearray()
    data = bytes(body)
    try:
        while True:
            decompressor = new_decompressor()
            out += decompressor.decompress(data, max_length=max_size + 1 - len(out))
            if len(out) > max_size:
                raise DecodeError(f"The message body decompresses to more than {max_size} bytes "
                                  "(compression.MAX_DECOMPRESSED_SIZE); refused")
            if not decompressor.eof:
                raise DecodeError(f"The {compression} message body is truncated")
            data = decompressor.unused_data
            if not (multi_stream and data):
                return bytes(out)
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:  # what a corrupt body raises
        raise DecodeError(f"Cannot decompress the {compression} message body: {exc}") from exc
