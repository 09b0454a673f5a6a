"""Hostile deliveries: whatever the headers hold, the worker's dispatcher never raises and decides the
message's fate at once — refused (rejected, with a FAILURE for a waiting sender) or taken (ready, or
held for its ETA) — so nothing wedges the consumer and nothing is left unsettled.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery import Celery, message
from minicelery.transport import Delivery
from minicelery.worker.dispatch import Dispatcher

APP = Celery("hostile", broker="memory://hostile", backend="rpc://", set_as_current=False)
APP.task(name="t.add", shared=False)(lambda x, y: x + y)
APP.finalize()


class IdlePool:
    """A pool with no idle child: the dispatcher only judges deliveries here."""

    def idle_count(self) -> int:
        return 0


scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
           | st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=20)


def deep(depth: int) -> Any:
    nested: Any = "bottom"
    for _ in range(depth):
        nested = {"n": nested} if depth % 2 else [nested]
    return nested


base_headers = message.TaskMessage.create("t.add", (1, 2), {}).encode("json").properties["headers"]
overrides = st.dictionaries(st.sampled_from(sorted(base_headers) + ["deep", "custom"]),
                            values | st.integers(0, 3000).map(deep), max_size=4)


@settings(max_examples=300, deadline=None)
@given(overrides, st.sampled_from(["application/json", "application/x-msgpack",
                                    "application/x-python-serialize", None]))
def test_every_delivery_is_decided_at_once_and_nothing_raises(changes, content_type):
    dispatcher = Dispatcher(APP, IdlePool(), hostname="w@h")  # type: ignore[arg-type]
    headers = {**base_headers, "id": str(uuid.uuid4()), **changes}
    delivery = Delivery(1, "", "celery", False, {"content_type": content_type, "headers": headers,
                                                 "reply_to": "replies", "correlation_id": None},
                        b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]')
    dispatcher.on_message(delivery)
    requests = dispatcher.requests
    taken = any(r.tag == 1 for r in requests.ready) or requests.held_count == 1
    decided = not dispatcher.acks.is_open(1)
    assert taken != decided  # exactly one: ready or held, or already acked/rejected
