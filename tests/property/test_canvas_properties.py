"""Properties of signatures: a JSON round trip changes nothing, and ``|`` is associative once flattened."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery import Celery, chain, chord, group, signature
from minicelery.canvas import Signature, _chain

APP = Celery("props", broker="amqp://guest:guest@127.0.0.1//")

scalars = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.booleans(), st.none())
options = st.fixed_dictionaries({}, optional={
    "queue": st.sampled_from(["q1", "q2"]), "countdown": st.integers(0, 100), "priority": st.integers(0, 9),
    "task_id": st.uuids().map(str)})


@st.composite
def plain(draw):
    return Signature(draw(st.sampled_from(["props.add", "props.mul", "props.tsum"])),
                     draw(st.lists(scalars, max_size=3)),
                     draw(st.dictionaries(st.sampled_from(["a", "b", "k"]), scalars, max_size=2)),
                     draw(options), immutable=draw(st.booleans()), app=APP)


def canvases(depth=3):
    if depth == 0:
        return plain()
    inner = st.lists(canvases(depth - 1), min_size=1, max_size=3)
    return st.one_of(
        plain(),
        inner.map(lambda tasks: chain(*tasks, app=APP)),
        inner.map(lambda tasks: group(*tasks, app=APP)),
        st.tuples(inner, canvases(depth - 1)).map(lambda hb: chord(hb[0], hb[1], app=APP)),
    )


@settings(max_examples=200, deadline=None)
@given(canvases())
def test_signature_json_round_trip(sig):
    text = json.dumps(sig)
    back = signature(json.loads(text), app=APP)
    assert json.dumps(back) == text
    assert type(back).__name__ == type(sig).__name__ or isinstance(sig, _chain)
    assert signature(json.loads(json.dumps(back)), app=APP) == back


@settings(max_examples=200, deadline=None)
@given(canvases(2), canvases(2), canvases(2))
def test_pipe_is_associative_once_flattened(a, b, c):
    left, right = (a | b) | c, a | (b | c)
    assert json.dumps(left) == json.dumps(right)
