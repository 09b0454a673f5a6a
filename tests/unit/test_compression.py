"""Compressed messages, as kombu sends them: compress after serializing, name the method in a header."""

from __future__ import annotations

import bz2
import lzma
import zlib

import pytest

from minicelery import Celery
from minicelery.compression import MAX_DECOMPRESSED_SIZE, compress, content_type_of, decompress
from minicelery.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from minicelery.message import SendOptions, TaskMessage
from minicelery.protocol import decode_body, parse_headers
from minicelery.sending import complete

KOMBU_NAMES = {"gzip": "application/x-gzip", "zlib": "application/x-gzip", "bzip2": "application/x-bz2",
               "bzip": "application/x-bz2", "lzma": "application/x-lzma", "xz": "application/x-lzma"}


@pytest.mark.parametrize(("alias", "content_type"), sorted(KOMBU_NAMES.items()))
def test_kombus_aliases_name_kombus_content_types(alias, content_type):
    assert content_type_of(alias) == content_type_of(content_type) == content_type


def test_the_bodies_are_the_standard_librarys_formats():
    body = b'[[2, 3], {}, {"callbacks": null}]'
    assert zlib.decompress(compress(body, "gzip")[0]) == body  # kombu's "gzip" is zlib's format
    assert bz2.decompress(compress(body, "bzip2")[0]) == body
    assert lzma.decompress(compress(body, "xz")[0]) == body


def test_an_unknown_method_is_refused_both_ways():
    with pytest.raises(ImproperlyConfigured, match="Compression 'snappy' is not supported"):
        compress(b"x", "snappy")
    with pytest.raises(DecodeError, match="compression 'application/x-brotli'"):
        decompress(b"x", "application/x-brotli")
    with pytest.raises(DecodeError, match="compression 5"):
        decompress(b"x", 5)


def _zeros_bomb(megabytes: int) -> bytes:
    """A small zlib body that decompresses to ``megabytes`` MiB of zeros (built without holding them)."""
    packer = zlib.compressobj()
    chunk = bytes(1024 * 1024)
    return b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()


def test_a_body_decompressing_past_the_bound_is_refused_naming_it():
    bomb = _zeros_bomb(64)
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError, match=r"more than 1048576 bytes \(compression.MAX_DECOMPRESSED_SIZE\)"):
        decompress(bomb, "application/x-gzip", max_size=1024 * 1024)
    assert len(decompress(bomb, "gzip", max_size=64 * 1024 * 1024)) == 64 * 1024 * 1024
    assert MAX_DECOMPRESSED_SIZE == 128 * 1024 * 1024  # RabbitMQ's default max_message_size


@pytest.mark.parametrize("name", ["gzip", "bzip2", "lzma"])
def test_a_truncated_or_corrupt_body_is_a_decode_error(name):
    body, _ = compress(b"some text " * 100, name)
    with pytest.raises(DecodeError):
        decompress(body[: len(body) // 2], name)
    with pytest.raises(DecodeError):
        decompress(b"\x00garbage" + body, name)


def test_concatenated_bz2_and_lzma_streams_are_read_like_the_stdlib_does():
    assert decompress(bz2.compress(b"ab") + bz2.compress(b"cd"), "bzip2") == b"abcd"
    assert decompress(lzma.compress(b"ab") + lzma.compress(b"cd"), "lzma") == b"abcd"


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_compressed_task_message_travels_like_kombus(serializer):
    envelope = TaskMessage.create("proj.add", (2, 3), {"x": "é"}, SendOptions(compression="gzip")).encode(serializer)
    properties = envelope.properties
    plain = TaskMessage.create("proj.add", (2, 3), {"x": "é"}, SendOptions()).encode(serializer)
    assert list(properties["headers"])[-1] == "compression"
    assert properties["headers"]["compression"] == "application/x-gzip"
    assert (properties["content_type"], properties["content_encoding"]) == (
        plain.properties["content_type"], plain.properties["content_encoding"])
    assert zlib.decompress(envelope.body) == plain.body
    headers = parse_headers(properties["headers"], properties)
    decoded = decode_body(envelope.body, properties["content_type"], properties["content_encoding"],
                          [serializer], compression=headers.headers["compression"])
    assert decoded[:2] == ([2, 3], {"x": "é"})


def test_a_refused_content_type_is_refused_before_decompressing():
    with pytest.raises(ContentDisallowed):
        decode_body(_zeros_bomb(1), "application/x-python-serialize", "binary", ["json"], compression="gzip")


def test_the_task_compression_setting_applies_unless_the_call_names_one():
    conf = Celery("t", set_as_current=False, task_compression="bzip2").conf
    assert complete(SendOptions(), conf, reply_queue="q").compression == "bzip2"
    assert complete(SendOptions(compression="gzip"), conf, reply_queue="q").compression == "gzip"
    assert complete(SendOptions(), Celery("t", set_as_current=False).conf, reply_queue="q").compression is None
