"""The consumer, driven by a state machine on the real memory transport, against a model of ack timing.

The broker is ``memory://`` (a real transport: it refuses an ack of an unknown delivery tag as RabbitMQ
does, requeues what is rejected, redelivers what a closed connection left unacked); a recording
subclass of its connection notes every delivery and how each one was settled. A fake pool runs nothing:
the machine decides when jobs finish and when a child dies. The model checks Celery's ack timing —
early ack when a child takes the job, acks_late after the outcome, a lost child requeues an
``acks_late`` + ``reject_on_worker_lost`` message, bad messages are dropped at once — and, beyond
Celery, that an early-acked job reaches a child only after its ack was sent: never an ack before the
fate is decided, never a message settled twice, never one left behind.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minicelery import Celery, protocol, states
from minicelery.exceptions import WorkerLostError
from minicelery.memory import MemoryConnection, MemoryTransport
from minicelery.transport import Delivery, QueueSpec
from minicelery.worker import events as pool_events
from minicelery.worker.consumer import Consumer
from minicelery.worker.job import JobResult
from minicelery.worker.shutdown import Shutdown


class RecordingConnection(MemoryConnection):
    """The memory connection, noting each delivery's task and how the consumer settled it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.kind: dict[int, str] = {}     # delivery tag → task name ('bad' without one)
        self.tag_of: dict[str, int] = {}   # task id → its latest delivery tag
        self.settled: dict[int, str] = {}  # delivery tag → 'ack', 'requeue' or 'drop'

    def consume(self, queue, on_message, on_cancel):
        def record(delivery: Delivery) -> None:
            self.kind[delivery.delivery_tag] = delivery.properties["headers"].get("task") or "bad"
            self.tag_of[delivery.properties["headers"]["id"]] = delivery.delivery_tag
            on_message(delivery)
        return super().consume(queue, record, on_cancel)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        covered = [t for t in self.kind if t <= delivery_tag and t not in self.settled] if multiple \
            else [delivery_tag]
        super().ack(delivery_tag, multiple)
        for tag in covered:
            assert tag not in self.settled, f"delivery {tag} settled twice"
            self.settled[tag] = "ack"

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        super().reject(delivery_tag, requeue)
        assert delivery_tag not in self.settled, f"delivery {delivery_tag} settled twice"
        self.settled[delivery_tag] = "requeue" if requeue else "drop"


class FakePool:
    """Children as slots that run nothing: the machine ends their jobs."""

    def __init__(self, size: int, connection: RecordingConnection) -> None:
        self.size = size
        self.connection = connection
        self.current: dict[int, int] = {}  # slot → job id
        self.tags: dict[int, int] = {}     # job id → delivery tag, from the consumer's request
        self.pending: list[pool_events.PoolEvent] = []
        self._never, self._unused = os.pipe()

    def fileno(self) -> int:
        return self._never

    def idle_count(self) -> int:
        return self.size - len(self.current)

    def submit(self, job_id, payload, *, soft_time_limit=None, time_limit=None, report_start=None) -> None:
        idle = [slot for slot in range(self.size) if slot not in self.current]
        assert idle, "submit with no idle child"
        tag = self.connection.tag_of[payload.id]
        if self.connection.kind[tag] == "ok":
            # An early-acked job reaches a child only once its ack was handed to the connection.
            assert self.connection.settled.get(tag) == "ack", f"job of delivery {tag} submitted before its ack"
        self.current[idle[0]] = job_id

    def poll(self, timeout) -> None:
        pass

    def next_deadline(self) -> None:
        return None

    def events(self) -> list[pool_events.PoolEvent]:
        events, self.pending = self.pending, []
        return events

    def stop(self, cold: bool = False, timeout: float | None = None) -> None:
        self.current.clear()

    def close(self) -> None:
        os.close(self._never)
        os.close(self._unused)


class ConsumerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        url = f"memory://machine-{uuid.uuid4().hex}"
        self.queue = f"q-{uuid.uuid4().hex[:8]}"
        self.app = Celery("bk", broker=url, set_as_current=False)
        self.app.task(name="ok", shared=False)(lambda: 1)
        self.app.task(name="late", shared=False, acks_late=True)(lambda: 1)
        self.app.task(name="late_requeue", shared=False, acks_late=True, reject_on_worker_lost=True)(
            lambda: 1)
        self.app.finalize()
        self.client = MemoryTransport(url)
        self.connection = RecordingConnection(url)
        self.pool = FakePool(2, self.connection)
        self.consumer = Consumer(self.app, self.pool, self.connection, Shutdown(), hostname="w@h",
                                 queues=[self.queue], prefetch_count=8)
        assert self.consumer.connect(startup=True)
        self.expected: dict[int, str] = {}  # delivery tag → the settlement the model expects
        self.ids = itertools.count()

    @rule(name=st.sampled_from(["ok", "late", "late_requeue", "unknown", "bad"]))
    def publish(self, name):
        if name == "bad":
            headers: dict[str, Any] = {"id": f"bad-{next(self.ids)}"}  # no task header
            body = b"[]"
        else:
            envelope = protocol.TaskMessage.create(name, (), {}).encode("json")
            headers, body = envelope.properties["headers"], envelope.body
        self.client.publish(body, {"content_type": "application/json", "content_encoding": "utf-8",
                                   "headers": headers}, routing_key=self.queue, declare=[QueueSpec(self.queue)])

    @rule()
    def turn(self):
        self.connection.nudge()  # the wait returns at once: the machine, not a clock, drives the loop
        running_before = set(self.pool.current.values())
        self.consumer.turn()
        for tag, kind in self.connection.kind.items():
            if kind in ("unknown", "bad"):
                self.expected[tag] = "drop"  # refused from the headers alone
        for request in self.consumer.dispatch.requests.accepted:  # given a child's place: early ack decided
            if not request.acks_late:
                self.expected[request.tag] = "ack"
        for job_id in set(self.pool.current.values()) - running_before:
            tag = self.pool.tags[job_id] = self.consumer.dispatch.requests.running[job_id].tag
            if self.connection.kind[tag] == "ok":
                self.expected[tag] = "ack"

    @precondition(lambda self: self.pool.current)
    @rule(data=st.data(), lost=st.booleans())
    def finish(self, data, lost):
        slot = data.draw(st.sampled_from(sorted(self.pool.current)))
        job_id = self.pool.current.pop(slot)
        tag = self.pool.tags[job_id]
        kind = self.connection.kind[tag]
        if lost:
            self.pool.pending.append(pool_events.JobLost(job_id, 1000, WorkerLostError("gone")))
            outcome = "requeue" if kind == "late_requeue" else "ack"
        else:
            self.pool.pending.append(pool_events.JobDone(job_id, 1000, JobResult(states.SUCCESS, None), 0.0))
            outcome = "ack"
        if kind != "ok":
            self.expected[tag] = outcome  # decided when the turn reads the event

    @invariant()
    def never_settled_before_decided_nor_differently(self):
        for tag, how in self.connection.settled.items():
            assert self.expected.get(tag) == how, (tag, self.connection.kind[tag], how, self.expected.get(tag))

    def teardown(self):
        self.turn()
        self.turn()  # a requeued message comes back once more: its new delivery is judged too
        running = {self.pool.tags[job_id] for job_id in self.pool.current.values()}
        unsettled = set(self.connection.kind) - set(self.connection.settled) - running
        accepted_or_ready = {r.tag for r in self.consumer.dispatch.requests.accepted}
        accepted_or_ready |= {r.tag for r in self.consumer.dispatch.requests.ready}
        assert unsettled <= accepted_or_ready, unsettled - accepted_or_ready
        self.connection.close()
        self.pool.close()


ConsumerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_consumer_bookkeeping = ConsumerMachine.TestCase
