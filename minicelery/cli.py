"""The command line: ``python -m minicelery -A proj worker`` and friends.

Sub-commands ``worker`` (``-B`` runs beat beside it, ``--embedded-broker`` a broker), ``beat`` (in
``cli_beat``), ``call``, ``result``, ``purge``, ``report``, the operating commands ``inspect``,
``control`` and ``events`` (in ``cli_control``), ``broker`` (the embedded AMQP broker,
:mod:`minicelery.embedded`) and ``demo``; ``-A/--app`` and ``-b/--broker`` may come before or after the
sub-command, as with Celery.
Errors that users cause (an app that cannot be found, a bad option, an unreachable broker, bad
configuration) print one paragraph, no traceback, and exit with a named code from :data:`EXIT_CODES`.
Celery's counterpart is ``celery.bin`` (click based); left out are ``multi``, ``status`` and ``shell``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import uuid
from collections.abc import Callable
from typing import Any

from . import __version__, cli_beat, cli_control, exceptions, log
from .app import Celery
from .embedded import add_broker_parser, broker_command, with_embedded_broker
from .exceptions import UsageError
from .imports import find_app
from .protocol import read_time_limit

__all__ = ["main", "EX_OK", "EX_FAILURE", "EX_USAGE", "EX_DATAERR", "EX_UNAVAILABLE", "EX_TEMPFAIL",
           "EX_CONFIG"]

EX_OK = 0           #: success, or a warm shutdown
EX_FAILURE = 1      #: the task failed (``result``), a cold shutdown, or an unexpected error
EX_USAGE = 64       #: a bad option or argument, or an ``-A`` that names no app
EX_DATAERR = 65     #: the embedded broker's data directory is locked by another broker or damaged
EX_UNAVAILABLE = 69  #: the broker cannot be reached
EX_TEMPFAIL = 75    #: ``result --timeout`` expired
EX_CONFIG = 78      #: the configuration is invalid

#: The one place where exception families become exit codes (checked in order).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (exceptions.OperationalError, EX_UNAVAILABLE),
    (exceptions.BrokerDataError, EX_DATAERR),
    (exceptions.ImproperlyConfigured, EX_CONFIG),
    (exceptions.TimeoutError, EX_TEMPFAIL),
    (exceptions.CeleryError, EX_FAILURE),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit(2) with a usage dump
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-A", "--app", default=default, help="the app: module, module:attr or package")
    parser.add_argument("-b", "--broker", default=default, help="the broker URL (overrides broker_url)")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum`` (a bad value is a usage error)."""
    def convert(text: str) -> int:
        value = int(text)  # argparse turns the ValueError into "invalid int value"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    convert.__name__ = "int"
    return convert


def _seconds(text: str) -> float:
    """An argparse type: a time limit in seconds, 0 for none (negative or non-finite: a usage error)."""
    value = float(text)  # argparse turns the ValueError into "invalid float value"
    try:
        read_time_limit(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


_seconds.__name__ = "float"


def build_parser() -> argparse.ArgumentParser:
    """The parser for every sub-command (``-A`` and ``-b`` accepted before and after it)."""
    parser = _Parser(prog="minicelery", description="minicelery: run and call tasks")
    _common(parser, None)
    parser.add_argument("--version", action="version", version=f"minicelery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    worker = sub.add_parser("worker", help="start a worker")
    _common(worker, argparse.SUPPRESS)
    worker.add_argument("-l", "--loglevel", default="WARNING", help="DEBUG, INFO, WARNING, ERROR, CRITICAL")
    worker.add_argument("-c", "--concurrency", type=_at_least(0),
                        help="child processes (default, or 0: worker_concurrency, else the CPU count)")
    worker.add_argument("-Q", "--queues", help="comma-separated queues to consume from")
    worker.add_argument("-n", "--hostname", help="node name (default celery@%%h; %%h, %%n, %%d expand)")
    worker.add_argument("-P", "--pool", default="prefork", choices=["prefork"], help="pool type")
    worker.add_argument("--prefetch-multiplier", type=_at_least(0), help="messages reserved per child")
    worker.add_argument("--max-tasks-per-child", type=_at_least(0),
                        help="replace a child after N tasks (0: the worker_max_tasks_per_child setting)")
    worker.add_argument("--time-limit", type=_seconds, help="hard time limit per task, in seconds (0: none)")
    worker.add_argument("--soft-time-limit", type=_seconds,
                        help="soft time limit per task, in seconds (0: none)")
    worker.add_argument("--without-heartbeat", action="store_true",
                        help="disable AMQP heartbeats and the worker-heartbeat events")
    worker.add_argument("-E", "--task-events", action="store_true", default=None,
                        help="send task events for monitoring (celery events, Flower)")
    worker.add_argument("--start-method", choices=["fork", "spawn"],
                        help="how children are started (default fork)")
    worker.add_argument("--embedded-broker", action="store_true",
                        help="start the embedded broker on the broker URL's local host and port first")
    for flag in ("--without-gossip", "--without-mingle"):
        worker.add_argument(flag, action="store_true", help="accepted for Celery compatibility")
    worker.add_argument("-B", "--beat", action="store_true",
                        help="also run beat, in a child process stopped with the worker (needs -A)")
    worker.add_argument("-s", "--schedule-filename", "--schedule", dest="schedule",
                        help="beat's schedule file, with -B (default: beat_schedule_filename)")
    cli_beat.add_parser(sub, lambda parser: _common(parser, argparse.SUPPRESS))
    call = sub.add_parser("call", help="send a task by name and print its id")
    _common(call, argparse.SUPPRESS)
    call.add_argument("name")
    call.add_argument("-a", "--args", default="[]", help="positional arguments as a JSON list")
    call.add_argument("-k", "--kwargs", default="{}", help="keyword arguments as a JSON object")
    call.add_argument("--countdown", type=float)
    call.add_argument("--expires", type=float)
    call.add_argument("--queue")
    result = sub.add_parser("result", help="wait for the result of a task sent with `call`")
    _common(result, argparse.SUPPRESS)
    result.add_argument("task_id")
    result.add_argument("--timeout", type=float)
    purge = sub.add_parser("purge", help="delete every waiting message from the task queues")
    _common(purge, argparse.SUPPRESS)
    purge.add_argument("-Q", "--queues", help="comma-separated queues (default: task_default_queue)")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    report = sub.add_parser("report", help="versions and the (censored) configuration")
    _common(report, argparse.SUPPRESS)
    add_broker_parser(sub, _at_least)
    demo = sub.add_parser("demo", help="the zero-setup tour: a broker, a worker and a client on this machine")
    demo.add_argument("-c", "--concurrency", type=_at_least(1), help="worker child processes (default: CPUs)")
    demo.add_argument("-n", "--count", type=_at_least(1), default=300, help="additions to send (default 300)")
    cli_control.add_parsers(sub, lambda parser: _common(parser, argparse.SUPPRESS))
    return parser


def main(argv: list[str] | None = None, app: Celery | None = None) -> int:
    """Run the command line and return the exit code (``python -m minicelery`` exits with it)."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        if args.command is None:
            raise UsageError("minicelery: give a command: worker, beat, call, result, purge, report, "
                             "inspect, control, events, broker or demo (see --help)")
        if args.command == "broker":  # needs no app
            try:
                level = log.parse_level(args.loglevel)
            except ValueError as exc:
                raise UsageError(f"minicelery broker: {exc}")
            return broker_command(args, level, __version__)
        if args.command == "demo":
            from .demo import run_demo  # its app and tasks load only for this command
            return run_demo(args.count, args.concurrency)
        app = app or _load_app(args.app)
        if args.broker:
            app.conf.broker_url = args.broker
        return COMMANDS[args.command](app, args)
    except UsageError as exc:
        return _fail(str(exc), EX_USAGE)
    except KeyboardInterrupt:
        return EX_FAILURE
    except Exception as exc:  # noqa: BLE001 - the family decides the exit code and the message
        for family, code in EXIT_CODES:
            if isinstance(exc, family):
                return _fail(f"Error: {exc}", code)
        raise


def _fail(message: str, code: int) -> int:
    print(message.rstrip(), file=sys.stderr)
    return code


def _load_app(spec: str | None) -> Celery:
    if not spec:
        raise UsageError("minicelery: no app given: pass -A/--app proj (a module, module:attr or package)")
    try:
        return find_app(spec, Celery)
    except (ImportError, LookupError) as exc:
        raise UsageError(f"Unable to load the app {spec!r}: {exc}. Check that the module is importable "
                         "from the current directory (or PYTHONPATH) and that it defines a Celery app.")


def _level(args: argparse.Namespace) -> int:
    try:
        return log.parse_level(args.loglevel)
    except ValueError as exc:
        raise UsageError(f"minicelery {args.command}: {exc}")


def worker_command(app: Celery, args: argparse.Namespace) -> int:
    """``worker``: run a worker until it is shut down (with ``-B``, beat in a child process beside it)."""
    from .worker.worker import Worker  # the worker (and multiprocessing) load only for this command

    level = _level(args)
    conf = app.conf
    hard, soft = read_time_limit(args.time_limit), read_time_limit(args.soft_time_limit)  # 0: none
    if args.time_limit is not None:  # `--time-limit 0` lifts a limit the configuration sets
        conf.task_time_limit = hard
    if args.soft_time_limit is not None:
        conf.task_soft_time_limit = soft
    log.setup(level)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    worker = Worker(app, hostname=args.hostname, concurrency=args.concurrency, queues=queues,
                    loglevel=level, prefetch_multiplier=args.prefetch_multiplier,
                    max_tasks_per_child=args.max_tasks_per_child,
                    heartbeat=0 if args.without_heartbeat else None, app_spec=args.app,
                    start_method=args.start_method, time_limit=hard, soft_time_limit=soft,
                    task_events=args.task_events, heartbeats=not args.without_heartbeat)
    beat = cli_beat.start_embedded(args) if args.beat else None
    try:
        return with_embedded_broker(conf.broker_url, worker.start) if args.embedded_broker else worker.start()
    finally:
        if beat is not None:
            cli_beat.stop_embedded(beat)


def beat_command(app: Celery, args: argparse.Namespace) -> int:
    """``beat``: see :mod:`minicelery.cli_beat`."""
    return cli_beat.beat_command(app, args, _level(args))


def call_command(app: Celery, args: argparse.Namespace) -> int:
    """``call``: send a task by name, print its id."""
    try:
        task_args, task_kwargs = json.loads(args.args), json.loads(args.kwargs)
    except ValueError as exc:
        raise UsageError(f"minicelery call: --args/--kwargs must be JSON: {exc}")
    if not isinstance(task_args, list) or not isinstance(task_kwargs, dict):
        raise UsageError("minicelery call: --args must be a JSON list and --kwargs a JSON object")
    options = {k: v for k, v in (("countdown", args.countdown), ("expires", args.expires),
                                 ("queue", args.queue)) if v is not None}
    task_id = str(uuid.uuid4())
    reply_queue = _reply_queue_for(task_id)
    app.backend.prepare(reply_queue, consume=False)  # left for `result` to read: see _reply_queue_for
    result = app.send_task(args.name, task_args, task_kwargs, task_id=task_id, reply_to=reply_queue,
                           **options)
    print(result.id)
    return EX_OK


def _reply_queue_for(task_id: str) -> str:
    # rpc:// results go to a queue owned by the sender, auto-deleted when its consumer goes. `call` names
    # the reply queue after the task and only declares it (a queue that never had a consumer stays until
    # its x-expires), so a later `result` can consume it.
    return f"minicelery.cli.{task_id}"


def result_command(app: Celery, args: argparse.Namespace) -> int:
    """``result``: wait for a task sent by ``call`` and print its result."""
    app.reply_queue = _reply_queue_for(args.task_id)
    outcome = app.AsyncResult(args.task_id).get(timeout=args.timeout, propagate=False)
    print(repr(outcome) if isinstance(outcome, BaseException) else json.dumps(outcome, default=repr))
    return EX_FAILURE if isinstance(outcome, BaseException) else EX_OK


def purge_command(app: Celery, args: argparse.Namespace) -> int:
    """``purge``: delete every waiting message from the task queues, after confirmation."""
    queues = [q.strip() for q in (args.queues or app.conf.task_default_queue).split(",") if q.strip()]
    if not args.force:
        print(f"WARNING: This will remove all tasks from queue{'s' if len(queues) > 1 else ''}: "
              f"{', '.join(queues)}.\n         There is no undo for this operation!\n\n"
              "(to skip this prompt use the -f option)")
        try:
            answer = input("Are you sure you want to delete all tasks (yes/NO)? ")
        except EOFError:  # no terminal and nothing piped in: the answer is no
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return EX_FAILURE
    count = app.broker.purge(queues)
    plural = "s" if len(queues) != 1 else ""
    if count:
        print(f"Purged {count} message{'s' if count != 1 else ''} from {len(queues)} known task "
              f"queue{plural}.")
    else:  # Celery's wording when there was nothing to purge
        print(f"No messages purged from {len(queues)} queue{plural}.")
    return EX_OK


def _operating(command: Callable[[Celery, argparse.Namespace], int], app: Celery,
               args: argparse.Namespace) -> int:
    """Run an ``inspect``/``control``/``events`` command; its ``ValueError`` is a usage error."""
    try:
        return command(app, args)
    except ValueError as exc:
        raise UsageError(f"Error: {exc}") from None


def report_command(app: Celery, args: argparse.Namespace) -> int:
    """``report``: versions and the humanized, censored configuration (for bug reports)."""
    versions = {"minicelery": __version__, "python": platform.python_version(),
                "platform": platform.platform(), "pid": os.getpid()}
    for module in ("pika", "msgpack"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = "not installed"
    print("\n".join(f"{key}: {value}" for key, value in versions.items()))
    print(f"app: {app!r}\n\n{app.conf.humanize(with_defaults=False, censored=True)}")
    return EX_OK


COMMANDS: dict[str, Callable[[Celery, argparse.Namespace], int]] = {
    "worker": worker_command, "beat": beat_command, "call": call_command, "result": result_command,
    "purge": purge_command, "report": report_command,
    **{name: functools.partial(_operating, command) for name, command in cli_control.COMMANDS.items()},
}
