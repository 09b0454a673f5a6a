"""The command line without a broker: argument parsing, exit codes of usage errors, and ``-A`` lookup.

Everything here runs in-process (``main(argv)`` returns the exit code) and never opens a connection; the
real subprocess behaviour against RabbitMQ is in ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from minicelery import Celery, cli
from minicelery.cli import (
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    build_parser,
    main,
)
from minicelery.imports import find_app


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


# -- exit codes -------------------------------------------------------------------------------------

def test_exit_codes_are_the_sysexits_values():
    assert (EX_OK, EX_FAILURE, EX_USAGE, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG) == (0, 1, 64, 69, 75, 78)


# -- -A and -b before and after the sub-command -----------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["-A", "proj", "-b", "amqp://h//", "worker"],
    ["worker", "-A", "proj", "-b", "amqp://h//"],
    ["-A", "proj", "worker", "-b", "amqp://h//"],
    ["--app", "proj", "worker", "--broker", "amqp://h//"],
    ["--app=proj", "worker", "--broker=amqp://h//"],
])
def test_app_and_broker_before_or_after_the_command(argv):
    args = parse(*argv)
    assert (args.command, args.app, args.broker) == ("worker", "proj", "amqp://h//")


def test_after_the_command_wins_over_before():
    assert parse("-A", "first", "worker", "-A", "second").app == "second"


@pytest.mark.parametrize("command", ["worker", "call x", "result 1", "purge", "report"])
def test_every_command_takes_app_after_it(command):
    args = parse(*command.split(), "-A", "proj")
    assert args.app == "proj"


def test_without_app_or_broker_they_are_none():
    args = parse("worker")
    assert args.app is None and args.broker is None


# -- worker options ---------------------------------------------------------------------------------

def test_worker_defaults():
    args = parse("worker")
    assert args.loglevel == "WARNING"
    assert args.concurrency is None and args.queues is None and args.hostname is None
    assert args.pool == "prefork"
    assert args.prefetch_multiplier is None and args.max_tasks_per_child is None
    assert args.time_limit is None and args.soft_time_limit is None
    assert args.without_heartbeat is False and args.start_method is None


def test_worker_options_short_and_long():
    args = parse("worker", "-l", "info", "-c", "3", "-Q", "a,b", "-n", "w1@%h", "-P", "prefork",
                 "--prefetch-multiplier", "0", "--max-tasks-per-child", "2", "--time-limit", "1.5",
                 "--soft-time-limit", "0.5", "--without-heartbeat", "--start-method", "spawn",
                 "--without-gossip", "--without-mingle")
    assert (args.loglevel, args.concurrency, args.queues, args.hostname) == ("info", 3, "a,b", "w1@%h")
    assert (args.prefetch_multiplier, args.max_tasks_per_child) == (0, 2)
    assert (args.time_limit, args.soft_time_limit) == (1.5, 0.5)
    assert args.without_heartbeat and args.start_method == "spawn"
    long = parse("worker", "--loglevel=DEBUG", "--concurrency=1", "--queues=q", "--hostname=x@y")
    assert (long.loglevel, long.concurrency, long.queues, long.hostname) == ("DEBUG", 1, "q", "x@y")


def test_zero_concurrency_and_max_tasks_mean_the_default_as_in_celery():
    args = parse("worker", "-c", "0", "--max-tasks-per-child", "0")
    assert (args.concurrency, args.max_tasks_per_child) == (0, 0)


# -- the other commands -----------------------------------------------------------------------------

def test_call_options():
    args = parse("call", "proj.add", "--args", "[2, 3]", "--kwargs", '{"z": 1}', "--countdown", "5",
                 "--expires", "60", "--queue", "hipri")
    assert (args.name, args.args, args.kwargs) == ("proj.add", "[2, 3]", '{"z": 1}')
    assert (args.countdown, args.expires, args.queue) == (5.0, 60.0, "hipri")
    short = parse("call", "proj.add", "-a", "[1]", "-k", "{}")
    assert (short.args, short.kwargs) == ("[1]", "{}")
    default = parse("call", "proj.add")
    assert (default.args, default.kwargs) == ("[]", "{}")


def test_result_purge_and_report_options():
    result = parse("result", "the-id", "--timeout", "2.5")
    assert (result.command, result.task_id, result.timeout) == ("result", "the-id", 2.5)
    purge = parse("purge", "-f", "-Q", "a,b")
    assert (purge.command, purge.force, purge.queues) == ("purge", True, "a,b")
    assert parse("purge").force is False
    assert parse("report").command == "report"


# -- usage errors: one line on stderr, exit 64, no traceback ----------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["worker", "-c", "notanumber"], ["--concurrency", "invalid int value", "'notanumber'"]),
    (["worker", "-c", "-2"], ["--concurrency", "must be at least 0, not -2"]),
    (["worker", "--max-tasks-per-child", "-1"], ["--max-tasks-per-child", "at least 0"]),
    (["worker", "--prefetch-multiplier", "-1"], ["--prefetch-multiplier", "at least 0"]),
    (["worker", "--time-limit", "soon"], ["--time-limit", "invalid float value"]),
    (["worker", "-P", "eventlet"], ["--pool", "invalid choice", "'eventlet'"]),
    (["worker", "--start-method", "forkserver"], ["--start-method", "invalid choice"]),
    (["worker", "--no-such-option"], ["unrecognized arguments", "--no-such-option"]),
    (["frobnicate"], ["invalid choice", "'frobnicate'"]),
    (["call"], ["required", "name"]),
    (["result"], ["required", "task_id"]),
    (["result", "x", "--timeout", "never"], ["--timeout", "invalid float value"]),
])
def test_bad_arguments_exit_64_with_one_line(argv, words, capsys):
    assert main(["-A", "anything", *argv]) == EX_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("minicelery")
    for word in words:
        assert word in err


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == EX_USAGE
    assert "give a command" in capsys.readouterr().err


def test_no_app_is_a_usage_error(capsys):
    assert main(["report"]) == EX_USAGE
    err = capsys.readouterr().err
    assert "no app given" in err and "-A" in err


def test_bad_log_level_exits_64_before_any_connection(capsys):
    app = Celery("loudapp", broker="amqp://guest:guest@127.0.0.1:1//", set_as_current=False)
    assert main(["worker", "-l", "LOUD"], app=app) == EX_USAGE
    err = capsys.readouterr().err
    assert "invalid log level 'LOUD'" in err and "Traceback" not in err


@pytest.mark.parametrize("option, value", [("--args", "[2,"), ("--args", '{"a": 1}'), ("--kwargs", "[1]")])
def test_call_with_bad_json_exits_64_before_any_connection(option, value, capsys):
    app = Celery("jsonapp", broker="amqp://guest:guest@127.0.0.1:1//", set_as_current=False)
    assert main(["call", "jsonapp.add", option, value], app=app) == EX_USAGE
    err = capsys.readouterr().err
    assert err.startswith("minicelery call:") and "Traceback" not in err


def test_help_and_version_exit_0(capsys):
    for argv in (["--help"], ["worker", "--help"], ["call", "-h"], ["--version"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "minicelery 0.1.0" in out and "--concurrency" in out and "--kwargs" in out


def test_unknown_module_is_a_usage_error(capsys):
    assert main(["-A", "no_such_module_for_cli_tests", "report"]) == EX_USAGE
    err = capsys.readouterr().err
    assert err.startswith("Unable to load the app 'no_such_module_for_cli_tests'")
    assert "No module named 'no_such_module_for_cli_tests'" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_report_prints_versions_and_censored_configuration(capsys):
    app = Celery("reportapp", broker="amqp://guest:hush@127.0.0.1:5672//", backend="rpc://",
                 set_as_current=False)
    assert main(["report", "-b", "amqp://bob:s3cret@rabbit:5672/vh"], app=app) == EX_OK
    out = capsys.readouterr().out
    assert "minicelery: 0.1.0" in out and f"python: {sys.version.split()[0]}" in out
    assert "pika: " in out and "msgpack: " in out
    assert "broker_url: 'amqp://bob:********@rabbit:5672/vh'" in out
    assert "s3cret" not in out and "hush" not in out


# -- find_app: the -A lookup ------------------------------------------------------------------------

@pytest.fixture
def modules(tmp_path, monkeypatch):
    """``write(relative_path, source)``: files under a fresh directory on sys.path; imports undone after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))  # find_app may add '' to it
    before = set(sys.modules)

    def write(relative: str, source: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))

    yield write
    for name in set(sys.modules) - before:
        del sys.modules[name]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


APP_SOURCE = """
    from minicelery import Celery
    {name} = Celery({main!r}, set_as_current=False)
"""


def test_find_app_module_attribute_app(modules):
    name = unique("modapp")
    modules(f"{name}.py", APP_SOURCE.format(name="app", main="by-app"))
    assert find_app(name, Celery).main == "by-app"


def test_find_app_module_attribute_celery(modules):
    name = unique("modcelery")
    modules(f"{name}.py", APP_SOURCE.format(name="celery", main="by-celery"))
    assert find_app(name, Celery).main == "by-celery"


def test_find_app_module_colon_attribute(modules):
    name = unique("modcolon")
    modules(f"{name}.py", APP_SOURCE.format(name="custom", main="by-colon"))
    assert find_app(f"{name}:custom", Celery).main == "by-colon"


def test_find_app_package_with_celery_module(modules):
    name = unique("proj")
    modules(f"{name}/__init__.py", "")
    modules(f"{name}/celery.py", APP_SOURCE.format(name="app", main="in-package"))
    assert find_app(name, Celery).main == "in-package"


def test_find_app_package_that_imports_its_celery_module(modules):
    name = unique("projimp")
    modules(f"{name}/__init__.py", "from .celery import app as celery_app\n")
    modules(f"{name}/celery.py", APP_SOURCE.format(name="app", main="imported"))
    assert find_app(name, Celery).main == "imported"


def test_find_app_any_instance_in_the_module(modules):
    name = unique("modany")
    modules(f"{name}.py", APP_SOURCE.format(name="whatever", main="any"))
    assert find_app(name, Celery).main == "any"


def test_find_app_errors(modules):
    name = unique("modnone")
    modules(f"{name}.py", "x = 1\n")
    with pytest.raises(LookupError, match="Could not find a Celery application"):
        find_app(name, Celery)
    with pytest.raises(LookupError, match="not a Celery application"):
        find_app(f"{name}:x", Celery)
    with pytest.raises(ModuleNotFoundError, match="has no attribute 'nope'"):
        find_app(f"{name}:nope", Celery)
    with pytest.raises(ModuleNotFoundError):
        find_app(unique("missing"), Celery)


def test_a_module_that_fails_to_import_is_not_hidden(modules):
    """An ImportError inside the user's module is a usage error that names the real missing module."""
    name = unique("modbroken")
    modules(f"{name}.py", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        find_app(name, Celery)


def test_main_reports_an_app_that_is_not_found(modules, capsys):
    name = unique("modnoapp")
    modules(f"{name}.py", "x = 1\n")
    assert main(["-A", name, "report"]) == EX_USAGE
    err = capsys.readouterr().err
    assert f"Unable to load the app '{name}'" in err and "Could not find a Celery application" in err


def test_main_finds_the_app_in_a_package(modules, capsys):
    name = unique("projmain")
    modules(f"{name}/__init__.py", "")
    modules(f"{name}/celery.py", APP_SOURCE.format(name="app", main=name))
    assert main(["-A", name, "report"]) == EX_OK
    assert f"app: <Celery {name} at 0x" in capsys.readouterr().out


def test_the_parser_is_argparse_but_never_exits_2():
    with pytest.raises(cli.UsageError):
        build_parser().parse_args(["worker", "-c", "x"])


# -- beat and worker -B -------------------------------------------------------------------------------

def test_beat_flags_are_celerys():
    args = parse("-A", "proj", "beat", "-s", "/tmp/sched", "--max-interval", "5", "-l", "INFO")
    assert (args.command, args.schedule, args.max_interval, args.loglevel, args.embedded) == (
        "beat", "/tmp/sched", 5.0, "INFO", False)
    worker = parse("-A", "proj", "worker", "-B", "--schedule-filename", "/tmp/s")
    assert (worker.beat, worker.schedule) == (True, "/tmp/s")
    assert parse("worker", "-s", "x").schedule == parse("worker", "--schedule", "x").schedule == "x"


def test_beat_usage_errors():
    app = Celery("nameless", set_as_current=False)
    assert main(["worker", "-B"], app=app) == EX_USAGE  # beat's process needs -A to load the app
    assert main(["beat", "--max-interval", "0"], app=app) == EX_USAGE
    assert main(["beat", "-l", "LOUD"], app=app) == EX_USAGE
