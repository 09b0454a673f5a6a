"""The worker's main-process bookkeeping, driven by a state machine against a model of the broker.

A fake connection plays RabbitMQ's part: it knows which deliveries are unacknowledged, refuses an ack
of an unknown tag (RabbitMQ closes the channel for that), and records when each message was settled. A
fake pool runs nothing: the machine decides when jobs finish, when a child dies and when a job queued
behind another comes back. The model checks Celery's ack timing: early ack when a child takes the job
(at once, or when its queued job becomes current), acks_late after the outcome, a lost child requeues an ``acks_late`` + ``reject_on_worker_lost`` message, bad messages are dropped at once — and
never an ack before the fate is decided, never a message settled twice, never one left behind.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minicelery import Celery, message, states
from minicelery.amqp import Delivery
from minicelery.exceptions import WorkerLostError
from minicelery.worker import events as pool_events
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
    """Children as slots, each with a current job and at most one queued behind it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.current: dict[int, int] = {}  # slot → job id
        self.queued: dict[int, int] = {}   # slot → job id
        self.pending: list[object] = []

    def idle_count(self) -> int:
        return self.size - len(self.current)

    def can_take(self, payload) -> bool:
        return self.idle_count() > 0 or len(self.queued) < len(self.current)

    def submit(self, job_id, payload, *, soft_time_limit=None, time_limit=None, report_start=None,
               queue=False) -> bool:
        idle = [slot for slot in range(self.size) if slot not in self.current]
        if idle:
            self.current[idle[0]] = job_id
            return True
        assert queue and self.can_take(payload)
        self.queued[next(slot for slot in self.current if slot not in self.queued)] = job_id
        return False

    def recall(self, limit=None) -> int:
        slots = sorted(self.queued)[:limit]
        for slot in slots:
            self.pending.append(pool_events.JobReturned(self.queued.pop(slot), 1000))
        return len(slots)

    def events(self):
        events, self.pending = self.pending, []
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
            envelope = message.TaskMessage.create(name, (), {}).encode("json")
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
        self.expected.update(self.reported)  # tick handles the pool's events first
        self.reported.clear()
        self.consumer.tick()
        # tick sends acks once a batch is decided; fewer may wait for the loop to go idle
        assert self.consumer.acks.decided() < self.consumer.ack_batch
        for job_id in self.pool.queued.values():
            self.job_tag[job_id] = self.consumer.running[job_id].tag
        for job_id in self.pool.current.values():
            tag = self.job_tag[job_id] = self.consumer.running[job_id].tag
            if self.kind[tag] == "ok":
                self.expected[tag] = "ack"  # early ack: decided when a child takes it

    @precondition(lambda self: self.pool.current)
    @rule(data=st.data(), lost=st.booleans())
    def finish(self, data, lost):
        slot = data.draw(st.sampled_from(sorted(self.pool.current)))
        job_id = self.pool.current.pop(slot)
        following = self.pool.queued.pop(slot, None)
        tag = self.job_tag[job_id]
        if lost:  # the child dies: its queued job, never accepted, is lost with it (it may have taken it)
            for lost_id in [job_id] + ([] if following is None else [following]):
                self.pool.pending.append(pool_events.JobLost(lost_id, 1000, WorkerLostError("gone")))
                lost_tag = self.job_tag[lost_id]
                self.reported[lost_tag] = "requeue" if self.kind[lost_tag] == "late_requeue" else "ack"
        else:
            self.pool.pending.append(pool_events.JobDone(job_id, 1000, JobResult(states.SUCCESS, None), 0.0))
            if self.kind[tag] != "ok":
                self.reported[tag] = "ack"
            if following is not None:
                self.pool.current[slot] = following
                self.pool.pending.append(pool_events.JobAccepted(following, 1000))
                if self.kind[self.job_tag[following]] == "ok":
                    self.reported[self.job_tag[following]] = "ack"  # early ack once its child takes it

    @precondition(lambda self: self.pool.queued)
    @rule(data=st.data())
    def queued_job_comes_back(self, data):  # stolen for an idle child, or left by a dead one
        slot = data.draw(st.sampled_from(sorted(self.pool.queued)))
        self.pool.pending.append(pool_events.JobReturned(self.pool.queued.pop(slot), 1000))

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
