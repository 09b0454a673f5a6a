"""Remote control's wire format and selection rule, as properties: a request body survives the trip
through the serializer and ``parse_request``; a worker is selected exactly as kombu's rule says."""

from __future__ import annotations

import fnmatch
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery import pidbox, serialization

name = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12)
node = st.builds(lambda a, b: f"{a}@{b}", name, name)
json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3),
                          max_leaves=8)


@given(method=name, arguments=st.dictionaries(name, json_value, max_size=4),
       destination=st.none() | st.lists(node, min_size=1, max_size=3),
       reply=st.booleans(), routing_key=name, serializer=st.sampled_from(["json", "msgpack"]))
@settings(deadline=None)  # the first example imports msgpack
def test_a_request_round_trips_through_the_wire(method, arguments, destination, reply, routing_key, serializer):
    reply_to = {"exchange": "reply.celery.pidbox", "routing_key": routing_key} if reply else None
    body = pidbox.request_body(method, arguments, destination=destination, reply_to=reply_to)
    content_type, encoding, data = serialization.dumps(body, serializer)
    request = pidbox.parse_request(serialization.loads(data, content_type, encoding, ["json", "msgpack"]))
    assert (request.method, dict(request.arguments), request.destination) == (method, arguments, destination)
    assert request.reply_to == reply_to
    assert (request.ticket is not None) == reply  # a cast carries no ticket
    assert ("ticket" in body, "reply_to" in body) == (reply, reply)


@given(body=json_value)
def test_parse_request_accepts_only_requests(body):
    try:
        request = pidbox.parse_request(body)
    except ValueError:
        return
    assert isinstance(body, dict) and isinstance(request.method, str) and request.method


@given(hostname=node, others=st.lists(node, max_size=3))
def test_a_destination_list_selects_exactly_its_members(hostname, others):
    assert pidbox.selected(hostname, [*others, hostname], None, None)
    assert pidbox.selected(hostname, others, None, None) == (hostname in others or not others)


@given(hostname=node, pattern=st.text(string.ascii_letters + "@*?", min_size=1, max_size=8))
def test_glob_and_pcre_patterns_select_like_fnmatch_and_re(hostname, pattern):
    assert pidbox.selected(hostname, None, pattern, "glob") == fnmatch.fnmatchcase(hostname, pattern)
    regex = re.escape(pattern)
    assert pidbox.selected(hostname, None, regex, "pcre") == (re.match(regex, hostname) is not None)
    assert pidbox.selected(hostname, None, pattern, None)  # a pattern without a matcher selects all


def test_a_string_destination_is_a_substring_test_as_in_celery():
    assert pidbox.selected("w1@vm", "xxw1@vmxx", None, None)
    assert not pidbox.selected("w1@vm", "w2@vm", None, None)
    with pytest.raises(ValueError, match="matcher"):
        pidbox.selected("w1@vm", None, "w*", "regex")


def test_names_and_declarations_are_celerys():
    class Conf:
        control_exchange, control_queue_ttl, control_queue_expires = "celery", 300.0, 10.0

    mailbox = pidbox.mailbox_queue("celery@host", Conf)
    assert (mailbox.name, mailbox.exchange, mailbox.exchange_type, mailbox.routing_key) == (
        "celery@host.celery.pidbox", "celery.pidbox", "fanout", "")
    assert (mailbox.durable, mailbox.exclusive, mailbox.auto_delete, mailbox.exchange_durable) == (
        False, True, True, False)
    assert mailbox.arguments == {"x-expires": 10000, "x-message-ttl": 300000}
    reply = pidbox.reply_queue("abc", Conf)
    assert (reply.name, reply.exchange, reply.exchange_type, reply.routing_key) == (
        "abc.reply.celery.pidbox", "reply.celery.pidbox", "direct", "abc")
    headers = pidbox.request_headers(7, 1.5)
    assert headers["clock"] == 7 and isinstance(headers["expires"], int)


@given(hostname=node, reply=json_value, serializer=st.sampled_from(["json", "msgpack"]))
@settings(deadline=None)
def test_a_reply_body_round_trips_as_node_to_result(hostname, reply, serializer):
    content_type, encoding, data = serialization.dumps({hostname: reply}, serializer)
    assert serialization.loads(data, content_type, encoding, ["json", "msgpack"]) == {hostname: reply}


@given(key=st.text(min_size=1, max_size=300))
def test_reply_to_names_must_fit_amqp_short_strings(key):
    body = {"method": "ping", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": key}}
    if len(key.encode()) <= 255:
        assert pidbox.parse_request(body).reply_to == body["reply_to"]
    else:
        with pytest.raises(ValueError, match="reply_to"):
            pidbox.parse_request(body)
