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



# -- a size bound for log lines (a 20 MB result must give a short line, quickly) -------------------------

BIG = 20 * 1024 * 1024


class Counted:
    """An item that counts how often it is printed."""

    calls = 0

    def __repr__(self) -> str:
        Counted.calls += 1
        return "<item>"


@pytest.mark.parametrize("value", [
    "x" * BIG,
    b"x" * BIG,
    bytearray(BIG),
    ["y" * 1024] * (BIG // 1024),
    {str(n): n for n in range(BIG // 32)},
    {"result": [("z" * 1024, {"deep": ["w" * BIG]})]},
    [[["v" * BIG]]],
], ids=["str", "bytes", "bytearray", "list", "dict", "nested", "nested-list"])
def test_a_20_mb_value_gives_a_bounded_text(value):
    text = saferepr(value, 1024)
    assert len(text) == 1024 + len("...") and text.endswith("...")
    assert text[:1] in "'b[{"


def test_the_bound_stops_the_work_not_only_the_text():
    Counted.calls = 0
    text = saferepr([Counted() for _ in range(100_000)], 1024)
    assert len(text) == 1027
    assert Counted.calls < 1024 // len("<item>, ") + 2  # only the items that show were printed


def test_a_string_longer_than_the_bound_is_cut_inside_its_quotes():
    assert saferepr("abcdef", 4) == "'abc..."
    assert saferepr("it's long", 5) == "'it\\'..."


def test_small_values_print_exactly_as_repr():
    for value in ([1, 2.5, None, True], (1,), {"a": [1, {"b": "c"}]}, "plain text", -7, 1e100):
        assert saferepr(value, 1024) == repr(value)


def test_an_int_too_long_for_str_does_not_raise():
    assert saferepr(10 ** 5000).startswith("<Unrepresentable <class 'int'>")
