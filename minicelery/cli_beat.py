"""``beat`` on the command line: on its own, or beside a worker with ``worker -B``.

``beat`` sends the periodic tasks of ``beat_schedule`` when they are due, until SIGTERM or SIGINT (exit
0). ``worker -B`` starts ``beat --embedded`` as a child process of the worker and stops it when the worker
stops. Celery's counterparts are ``celery.bin.beat`` and the worker's ``-B`` option; Celery runs the
embedded beat in a forked process, minicelery in a fresh interpreter (see :func:`start_embedded`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from . import __version__, log
from .exceptions import UsageError

__all__ = ["add_parser", "beat_command", "start_embedded", "stop_embedded"]


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``beat`` sub-command to the command line's sub-parsers."""
    beat = sub.add_parser("beat", help="send the periodic tasks of beat_schedule when they are due")
    common(beat)
    beat.add_argument("-l", "--loglevel", default="WARNING", help="DEBUG, INFO, WARNING, ERROR, CRITICAL")
    beat.add_argument("-s", "--schedule", help="the schedule file (default: beat_schedule_filename)")
    beat.add_argument("--max-interval", type=float,
                      help="longest sleep between checks, in seconds (default: beat_max_loop_interval, "
                           "else 300)")
    beat.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)  # run by `worker -B`


def beat_command(app: Any, args: argparse.Namespace, level: int) -> int:
    """``beat``: send the periodic tasks of ``beat_schedule`` when due, until SIGTERM or SIGINT (exit 0)."""
    from .beat import Service  # the schedules and the schedule file load only for this command

    if args.max_interval is not None and args.max_interval <= 0:
        raise UsageError("minicelery beat: --max-interval must be a positive number of seconds")
    # As Celery's `worker -B` child, an embedded beat's lines say `Beat` where a process name goes.
    log.setup(level, log.LOG_FORMAT.replace("%(processName)s", "Beat") if args.embedded else log.LOG_FORMAT)
    service = Service(app, max_interval=args.max_interval, schedule_filename=args.schedule)
    if args.embedded:
        service.stop_at_end_of(sys.stdin.fileno())
    else:
        print(service.banner(args.loglevel, __version__), flush=True)
    service.install_signal_handlers()
    service.start()
    return 0


def start_embedded(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Start ``python -m minicelery -A <app> beat --embedded`` as a child of this worker (``worker -B``).

    A fresh interpreter (not a fork) loads the app by its ``-A`` name, so beat shares nothing with the
    worker's pool or its broker connection. Its stdin is a pipe from the worker: when the worker dies,
    even by SIGKILL, the pipe ends and beat stops itself. Its log goes to the worker's stderr.
    """
    if not args.app:
        raise UsageError("minicelery worker -B: give the app with -A/--app, so that the beat process can "
                         "load it too")
    broker = ["-b", args.broker] if args.broker else []
    schedule = ["-s", args.schedule] if args.schedule else []
    command = [sys.executable, "-m", "minicelery", "-A", args.app, *broker,
               "beat", "--embedded", "-l", args.loglevel, *schedule]
    return subprocess.Popen(command, stdin=subprocess.PIPE)


def stop_embedded(beat: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then wait (beat writes its schedule file and exits 0); SIGKILL if it hangs."""
    if beat.poll() is None:
        beat.send_signal(signal.SIGTERM)
    try:
        code = beat.wait(timeout)
    except subprocess.TimeoutExpired:
        beat.kill()
        code = beat.wait()
    if beat.stdin is not None:
        beat.stdin.close()
    if code != 0:
        logging.getLogger(__name__).warning("The embedded beat (pid %d) exited with code %d.", beat.pid, code)
