"""Compressed task messages between Celery 5 and minicelery, against the real RabbitMQ (no worker).

* A Celery client's ``apply_async(compression=...)`` (``gzip``, ``bzip2``, ``lzma``) publishes a body that
  ``minicelery.protocol.decode_body`` decodes, given the message's ``compression`` header.
* minicelery's ``apply_async(compression=...)`` publishes what kombu's own ``Message`` decompresses and
  decodes, with the same header, the same content type and, for the same task, the same body bytes as
  Celery's.
"""

from __future__ import annotations

import uuid

import celery_side
import mini_side
import pytest
from kombu.compression import decompress as kombu_decompress
from kombu.message import Message
from test_wire_format import basic_get, properties_dict

from minicelery.protocol import decode_body, parse_headers

pytestmark = [pytest.mark.interop, pytest.mark.broker]

METHODS = {"gzip": "application/x-gzip", "bzip2": "application/x-bz2", "lzma": "application/x-lzma"}
ARGS, KWARGS = (2, "é"), {"z": [1, None], "text": "x" * 500}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_celery_clients_compressed_message_decodes_here(clients, unique_queue, pika_channel, method,
                                                          serializer):
    queue = unique_queue(f"celery-{method}")
    sent = celery_side.echo.apply_async(ARGS, KWARGS, queue=queue, compression=method, serializer=serializer)
    _, properties, body = basic_get(pika_channel, queue)
    assert properties.headers["compression"] == METHODS[method]
    headers = parse_headers(properties.headers, properties_dict(properties))
    args, kwargs, _ = decode_body(body, properties.content_type, properties.content_encoding,
                                  ["json", "msgpack"], compression=headers.headers["compression"])
    assert headers.id == sent.id
    assert (args, kwargs) == (list(ARGS), KWARGS)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_minicelerys_compressed_message_is_kombus(clients, unique_queue, pika_channel, method, serializer):
    celery_queue, mini_queue, reply_queue = unique_queue("z-celery"), unique_queue("z-mini"), unique_queue("z-r")
    common = dict(task_id=str(uuid.uuid4()), serializer=serializer, reply_to=reply_queue, compression=method)
    celery_side.echo.apply_async(ARGS, KWARGS, queue=celery_queue, **common)
    mini_side.echo.apply_async(ARGS, KWARGS, queue=mini_queue, **common)
    _, c_props, c_body = basic_get(pika_channel, celery_queue)
    _, m_props, m_body = basic_get(pika_channel, mini_queue)

    assert m_props.headers["compression"] == c_props.headers["compression"] == METHODS[method]
    assert list(m_props.headers) == list(c_props.headers)  # the compression header last, as kombu puts it
    assert (m_props.content_type, m_props.content_encoding) == (c_props.content_type, c_props.content_encoding)
    assert m_body == c_body
    message = Message(body=m_body, content_type=m_props.content_type, content_encoding=m_props.content_encoding,
                      headers=m_props.headers, accept=["application/json", "application/x-msgpack"])
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == (list(ARGS), KWARGS)
    assert kombu_decompress(m_body, m_props.headers["compression"]) == kombu_decompress(c_body, METHODS[method])
