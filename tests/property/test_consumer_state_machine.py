"""The worker's main-process bookkeeping, driven by a state machine against a model of the broker.

A fake connection plays RabbitMQ's part: it knows which deliveries are unacknowledged, refuses an ack
of an unknown tag (RabbitMQ closes the channel for that), and records when each message was settled. A
fake pool runs nothing: the machine decides when jobs finish or their child dies. The model checks
Celery's ack timing: early ack when a child takes the job, acks_late after the outcome, a lost child
requeues an ``acks_late`` + ``reject_on_worker_lost`` message, bad messages are dropped at once — and
never an ack before the fate is decided, never a message settled twice, never one left behind.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minicelery import Celery, protocol, states
from minicelery.amqp import Delivery
from minicelery.exceptions import WorkerLostError
from minicelery.worker import pool as pool_events
from minicelery.worker.consumer import Consumer
from minicelery.worker.job import JobResult


class FakeConnection:
    """RabbitMQ's view of one channel: unacked deliveries and how each one was settled."""

    def __init__(self) -> None:
        self.unacked: set[int] = set()
        self.settled: dict[int, str] = {}
        self.published = 0
        self.prefetch = None
        self.batched: list[Callable[[], None]] | None = None

    @contextlib.contextmanager
    def batch(self):  # the broker sees a batch's calls when it ends, in order
        self.batched = []
        yield
        calls, self.batched = self.batched, None
        for call in calls:
            call()

    def deliver(self, tag: int) -> None:
        self.unacked.add(tag)

    def ack(self, tag: int, multiple: bool = False) -> None:
        if self.batched is not None:
            return self.batched.append(lambda: self.ack(tag, multiple))
        covered = {t for t in self.unacked if t <= tag} if multiple else {tag}
        assert tag in self.unacked, f"ack of unknown delivery tag {tag}"
        for t in covered:
            self.unacked.discard(t)
            self.settled[t] = "ack"

    def reject(self, tag: int, requeue: bool) -> None:
        if self.batched is not None:
            return self.batched.append(lambda: self.reject(tag, requeue))
        assert tag in self.unacked, f"reject of unknown delivery tag {tag}"
        self.unacked.discard(tag)
        self.settled[tag] = "requeue" if requeue else "drop"

    def publish(self, body, properties, *, exchange="", routing_key):
        if self.batched is not None:
            return self.batched.append(lambda: self.publish(body, properties, routing_key=routing_key))
        self.published += 1
        return None

    def qos(self, count: int) -> None:
        self.prefetch = count


class FakePool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: dict[int, object] = {}
        self.queued: list[object] = []

    def idle_count(self) -> int:
        return self.size - len(self.jobs)

    def submit(self, job_id, payload, *, soft_time_limit=None, time_limit=None, report_start=None) -> int:
        assert self.idle_count() > 0
        self.jobs[job_id] = payload
        return 1000 + job_id

    def events(self):
        events, self.queued = self.queued, []
        return events


class ConsumerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.app = Celery("bk", set_as_current=False)
        self.app.task(name="ok", shared=False)(lambda: 1)
        self.app.task(name="late", shared=False, acks_late=True)(lambda: 1)
        self.app.task(name="late_requeue", shared=False, acks_late=True, reject_on_worker_lost=True)(
            lambda: 1)
        self.app.finalize()
        self.pool = FakePool(2)
        self.connection = FakeConnection()
        self.consumer = Consumer(self.app, self.pool, hostname="w@h", prefetch_count=8)
        self.consumer.connection = self.connection
        self.tags = itertools.count(1)
        self.kind: dict[int, str] = {}      # tag → task name or 'bad'
        self.expected: dict[int, str] = {}  # tag → settlement the model expects, once decided
        self.job_tag: dict[int, int] = {}   # job id → tag
        self.reported: dict[int, str] = {}  # tag → expected settlement once the pool event is handled

    @rule(name=st.sampled_from(["ok", "late", "late_requeue", "unknown", "bad"]))
    def deliver(self, name):
        tag = next(self.tags)
        if name == "bad":
            headers = {"id": "x"}  # no task header: refused from the headers alone
            body = b"[]"
        else:
            envelope = protocol.TaskMessage.create(name, (), {}).encode("json")
            headers, body = envelope.properties["headers"], envelope.body
        self.connection.deliver(tag)
        self.consumer.on_message(Delivery(tag, "", "q", False, {
            "content_type": "application/json", "content_encoding": "utf-8", "headers": headers},
            body))
        self.kind[tag] = name
        if name in ("unknown", "bad"):
            self.expected[tag] = "drop"

    @rule()
    def tick(self):
        before = set(self.pool.jobs)
        self.expected.update(self.reported)  # tick handles the pool's events first
        self.reported.clear()
        self.consumer.tick()
        # tick sends acks once a batch is decided; fewer may wait for the loop to go idle
        assert self.consumer.acks.decided() < self.consumer.ack_batch
        for job_id in set(self.pool.jobs) - before:
            tag = self.consumer.running[job_id].tag
            self.job_tag[job_id] = tag
            if self.kind[tag] == "ok":
                self.expected[tag] = "ack"  # early ack: decided when a child takes it

    @precondition(lambda self: self.pool.jobs)
    @rule(data=st.data(), lost=st.booleans())
    def finish(self, data, lost):
        job_id = data.draw(st.sampled_from(sorted(self.pool.jobs)))
        del self.pool.jobs[job_id]
        tag = self.job_tag[job_id]
        if lost:
            self.pool.queued.append(pool_events.JobLost(job_id, 1000, WorkerLostError("gone")))
            if self.kind[tag] == "late_requeue":
                self.reported[tag] = "requeue"
            elif self.kind[tag] == "late":
                self.reported[tag] = "ack"
        else:
            self.pool.queued.append(pool_events.JobDone(job_id, 1000, JobResult(states.SUCCESS, None), 0.0))
            if self.kind[tag] != "ok":
                self.reported[tag] = "ack"

    @invariant()
    def never_settled_before_decided_nor_differently(self):
        for tag, how in self.connection.settled.items():
            assert self.expected.get(tag) == how, (tag, self.kind[tag], how, self.expected.get(tag))

    @rule()
    def flush(self):  # what the worker does before it waits
        self.consumer.flush()
        assert set(self.connection.settled) == set(self.expected)
        assert self.connection.unacked == set(self.kind) - set(self.expected)

    def teardown(self):
        self.flush()


ConsumerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_consumer_bookkeeping = ConsumerMachine.TestCase
