"""A time limit of 0 means no limit, as in Celery; a negative or non-finite one is a clear error."""

from __future__ import annotations

import math

import pytest

from minicelery import Celery
from minicelery.cli import EX_USAGE, main
from minicelery.exceptions import ImproperlyConfigured, InvalidTaskError
from minicelery.message import SendOptions
from minicelery.protocol import parse_headers, read_time_limit


@pytest.mark.parametrize(("value", "read"), [(None, None), (0, None), (0.0, None), (5, 5), (0.25, 0.25)])
def test_zero_and_none_mean_no_limit(value, read):
    assert read_time_limit(value) == read


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, "10", True, [1], 10 ** 400])
def test_negative_non_finite_and_non_numbers_are_refused(value):
    with pytest.raises(ValueError, match="a time limit must be"):
        read_time_limit(value)


def test_a_message_with_timelimit_zero_has_no_limit():
    parsed = parse_headers({"task": "t", "id": "i", "timelimit": [0, 0]})
    assert parsed.timelimit == (None, None)
    assert parse_headers({"task": "t", "id": "i", "timelimit": [0, 2.5]}).timelimit == (None, 2.5)


@pytest.mark.parametrize("timelimit", [[-1, None], [None, -0.001], [math.nan, None], [math.inf, 1], ["5", None]])
def test_a_message_with_a_bad_timelimit_is_an_invalid_task(timelimit):
    with pytest.raises(InvalidTaskError, match="Header 'timelimit' must be .*: a time limit must be"):
        parse_headers({"task": "t", "id": "i", "timelimit": timelimit})


def test_a_task_and_a_setting_of_zero_mean_no_limit():
    app = Celery("t", set_as_current=False, task_time_limit=0, task_soft_time_limit=0)

    @app.task(time_limit=0)
    def explicit():
        return None

    @app.task
    def from_settings():
        return None

    app.finalize()
    assert (explicit.time_limit, from_settings.time_limit, from_settings.soft_time_limit) == (None, None, None)


def test_a_negative_setting_is_improperly_configured():
    app = Celery("t", set_as_current=False, task_time_limit=-5)

    @app.task
    def noop():
        return None

    with pytest.raises(ImproperlyConfigured, match=r"time_limit \(or the task_time_limit setting\).*-5"):
        app.finalize()


def test_send_options_refuse_a_negative_limit_and_read_zero_as_none():
    with pytest.raises(ValueError, match="a time limit must be"):
        SendOptions(time_limit=-1)
    assert SendOptions(time_limit=0, soft_time_limit=5).soft_time_limit == 5  # 0: no hard limit to be under


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_the_cli_refuses_a_negative_or_non_finite_limit(value, capsys):
    assert main(["-A", "anything", "worker", "--time-limit", value]) == EX_USAGE
    assert "--time-limit" in capsys.readouterr().err
    assert main(["-A", "anything", "worker", "--soft-time-limit", value]) == EX_USAGE
    assert "a time limit must be" in capsys.readouterr().err


def test_the_cli_accepts_zero_for_no_limit():
    from minicelery.cli import build_parser

    args = build_parser().parse_args(["worker", "--time-limit", "0", "--soft-time-limit", "0"])
    assert (args.time_limit, args.soft_time_limit) == (0.0, 0.0)
    assert read_time_limit(args.time_limit) is None
