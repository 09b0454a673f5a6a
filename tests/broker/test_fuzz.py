"""Fuzzing the embedded broker: random bytes after a good handshake, and random method sequences on two
connections checked against a model of queues and acks. Throughout, a third connection keeps being served
and nothing escapes into the broker's loop (the session fixture checks that at the end)."""

from __future__ import annotations

import struct

from embedded_support import RawClient, connect, drain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

FRAME_KINDS = st.sampled_from([1, 2, 3, 8, 9])


@st.composite
def frames(draw) -> bytes:
    """Mostly well-framed frames with random payloads (random method ids, truncated arguments, tables)."""
    kind = draw(FRAME_KINDS)
    channel = draw(st.sampled_from([0, 1, 2, 65535]))
    if kind == 1:
        ids = draw(st.sampled_from([(10, 50), (20, 10), (20, 40), (40, 10), (50, 10), (50, 20), (60, 10),
                                    (60, 20), (60, 40), (60, 70), (60, 80), (60, 90), (60, 120), (85, 10),
                                    (90, 10), (99, 1)]))
        payload = struct.pack(">HH", *ids) + draw(st.binary(max_size=40))
    else:
        payload = draw(st.binary(max_size=60))
    end = draw(st.sampled_from([0xCE, 0xCE, 0xCE, 0x00]))
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes((end,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(min_size=1, max_size=300), st.lists(frames(), min_size=1, max_size=6)))
def test_random_input_after_a_handshake_never_hurts_the_broker(embedded, data):  # check 37 (fuzz)
    raw = RawClient(embedded.port)
    raw.send(data if isinstance(data, bytes) else b"".join(data))
    raw.sock.settimeout(0.05)
    try:
        raw.sock.recv(65536)
    except OSError:
        pass
    raw.close()
    assert embedded.errors == []


def test_a_third_connection_is_served_after_the_fuzzing(embedded):
    connection = connect(embedded.port)
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"alive")
    assert [body for _, _, body in drain(channel, queue)] == [b"alive"]
    connection.close()


class Model(RuleBasedStateMachine):
    """Two pika connections publish, get, ack, nack, reject and close channels on two queues; a model says
    what each queue must hold (ready, in publish order) and what each channel holds unacked."""

    broker = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        port = type(self).broker.port
        self.connections = [connect(port), connect(port)]
        self.channels = [c.channel() for c in self.connections]
        self.queues = [f"fuzz.{id(self)}.{n}" for n in range(2)]
        for queue in self.queues:
            self.channels[0].queue_declare(queue)
        self.ready = {q: [] for q in self.queues}           # bodies in order
        self.unacked = [dict(), dict()]                     # per channel: tag -> (queue, body)
        self.counter = 0

    @rule(side=st.integers(0, 1), which=st.integers(0, 1))
    def publish(self, side, which):
        self.counter += 1
        body = str(self.counter).encode()
        self.channels[side].basic_publish("", self.queues[which], body)
        self.ready[self.queues[which]].append((self.counter, body))
        self._round_trip(side)

    def _round_trip(self, side):
        # the invariant asks on connection 0: make sure the broker has handled this connection's frames
        self.channels[side].queue_declare(self.queues[0], passive=True)

    @rule(side=st.integers(0, 1), which=st.integers(0, 1))
    def get(self, side, which):
        queue = self.queues[which]
        method, _, body = self.channels[side].basic_get(queue)
        if not self.ready[queue]:
            assert method is None
            return
        order, expected = self.ready[queue].pop(0)
        assert body == expected
        self.unacked[side][method.delivery_tag] = (queue, order, body)

    @precondition(lambda self: any(self.unacked))
    @rule(side=st.integers(0, 1), verb=st.sampled_from(["ack", "nack", "reject", "ack-multiple"]),
          pick=st.integers(0, 1000))
    def settle(self, side, verb, pick):
        if not self.unacked[side]:
            return
        tags = sorted(self.unacked[side])
        tag = tags[pick % len(tags)]
        channel = self.channels[side]
        chosen = [t for t in tags if t <= tag] if verb == "ack-multiple" else [tag]
        if verb in ("ack", "ack-multiple"):
            channel.basic_ack(tag, multiple=verb == "ack-multiple")
        elif verb == "nack":
            channel.basic_nack(tag, requeue=True)
        else:
            channel.basic_reject(tag, requeue=True)
        for t in chosen:
            queue, order, body = self.unacked[side].pop(t)
            if verb in ("nack", "reject"):
                self._requeue(queue, order, body)
        self._round_trip(side)

    def _requeue(self, queue, order, body):
        self.ready[queue].append((order, body))
        self.ready[queue].sort()

    @rule(side=st.integers(0, 1))
    def reopen_channel(self, side):
        self.channels[side].close()
        for queue, order, body in self.unacked[side].values():
            self._requeue(queue, order, body)
        self.unacked[side] = {}
        self.channels[side] = self.connections[side].channel()

    @invariant()
    def depths_match(self):
        for queue in self.queues:
            count = self.channels[0].queue_declare(queue, passive=True).method.message_count
            assert count == len(self.ready[queue])

    def teardown(self):
        for queue in self.queues:
            self.channels[0].queue_delete(queue)
        for connection in self.connections:
            connection.close()


def test_random_method_sequences_match_the_model(embedded):
    Model.broker = embedded
    runner = Model.TestCase
    runner.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)
    runner("runTest").runTest()
    test_a_third_connection_is_served_after_the_fuzzing(embedded)
    assert embedded.errors == []
