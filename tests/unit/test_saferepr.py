"""``saferepr``: Celery's text of a value, bounded in size and never failing."""

from __future__ import annotations

import decimal

import pytest

from minicelery.saferepr import saferepr


@pytest.mark.parametrize(("value", "text"), [
    ((2, 3), "(2, 3)"),
    ((1,), "(1,)"),
    ((), "()"),
    ({"x": 1, "y": 2}, "{'x': 1, 'y': 2}"),
    ({"y": "é"}, "{'y': 'é'}"),
    (("it's",), "('it\\'s',)"),
    (("a\nb",), "('a\nb',)"),  # Celery does not escape control characters
    ((b"ab", b"\xff"), "(b'ab', b'ff')"),
    ((True, None, 1.5, decimal.Decimal("2")), "(True, None, 1.5, Decimal('2'))"),
    (({1}, set(), frozenset({2}), frozenset()), "({1}, set(), frozenset({2}), frozenset())"),
    (([[[1]]],), "([[[...]]],)"),
    ({"a": {"b": {"c": {"d": 1}}}}, "{'a': {'b': {'c': {...}}}}"),
    ({(1, 2): [3]}, "{(1, 2): [3]}"),
])
def test_saferepr_matches_celery(value, text):
    assert saferepr(value) == text


def test_saferepr_guards_recursion():
    loop: list = [1]
    loop.append(loop)
    assert saferepr([loop]).startswith("[[1, <Recursion on list with id=")


def test_saferepr_survives_a_failing_repr():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert saferepr((Broken(),)).startswith("(<Unrepresentable <class ")


def test_saferepr_cuts_at_maxlen():
    text = saferepr(tuple(range(1000)), 20)
    assert text == "(0, 1, 2, 3, 4, 5, 6..."

