"""Helpers for the tests that drive ``python -m minicelery`` as a real subprocess.

* :func:`run_cli` runs one short command (``call``, ``result``, ``purge``, ``report``, a failing
  ``worker``) to completion and returns its exit code and output.
* :class:`WorkerProcess` starts ``python -m minicelery ... worker`` in its own session, reads its stdout
  and stderr in background threads, and lets a test wait for a line (:meth:`WorkerProcess.wait_for_line`)
  instead of sleeping. :meth:`WorkerProcess.kill` ends it and its pool children (the process group the
  worker leads; it was started here, in a new session, so the group is ours alone).
* :func:`wait_for_count` waits for a queue's ready-message count (``broker_admin.ready_count``).

The worker subprocesses import ``ctasks`` from this directory (see its docstring for the environment
variables it reads).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker_admin import BROKER_URL, plain_connection, ready_count

HERE = Path(__file__).resolve().parent
#: The worker's log line format (Celery's): ``[2026-11-24 01:20:05,837: INFO/MainProcess] ...``.
LOG_LINE = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: (?P<level>[A-Z]+)/(?P<process>[A-Za-z]+(-\d+)?)\] "


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: ``ctasks`` importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CTASKS_BROKER", BROKER_URL)
    env.update(extra or {})
    return env


@dataclass
class Completed:
    """What a finished CLI command did."""

    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        return f"exit {self.returncode} after {self.elapsed:.2f}s\n--stdout--\n{self.stdout}\n--stderr--\n{self.stderr}"


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
            stdin: str | None = None, timeout: float = 30.0, argv0: Sequence[str] | None = None) -> Completed:
    """Run ``python -m minicelery *args`` to completion (``argv0`` replaces ``python -m minicelery``)."""
    command = list(argv0 or [sys.executable, "-m", "minicelery"]) + list(args)
    started = time.monotonic()
    done = subprocess.run(command, env=cli_env(env), cwd=cwd or HERE, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout)
    return Completed(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


class _Reader(threading.Thread):
    """Collects the lines of one pipe; ``wait_for`` blocks until a line matches or the deadline passes."""

    def __init__(self, stream, name: str) -> None:
        super().__init__(name=f"reader-{name}", daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.closed = False
        self.changed = threading.Condition()

    def run(self) -> None:
        for raw in iter(self.stream.readline, ""):
            with self.changed:
                self.lines.append(raw.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float, start: int,
                 count: int = 1) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [m for line in self.lines[start:] if (m := pattern.search(line))]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return found
                self.changed.wait(remaining)


class WorkerProcess:
    """A ``python -m minicelery [-A ...] worker ...`` subprocess whose output the test can wait on.

    Args:
        args: the command line after ``python -m minicelery`` (or after ``argv0``).
        env: extra environment variables (``CTASKS_QUEUE``, ``CTASKS_DIR``, ...).
        argv0: the program to run instead of ``python -m minicelery`` (e.g. ``[python, '-c', code]``).
    """

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | str | None = None, argv0: Sequence[str] | None = None) -> None:
        self.args = list(args)
        command = list(argv0 or [sys.executable, "-m", "minicelery"]) + self.args
        # A new session: signals typed at the terminal running pytest never reach the worker, and the
        # worker's process group holds exactly the worker and its pool children.
        self.proc = subprocess.Popen(command, env=cli_env(env), cwd=cwd or HERE, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     errors="replace", start_new_session=True)
        self.out = _Reader(self.proc.stdout, "stdout")
        self.err = _Reader(self.proc.stderr, "stderr")
        self.out.start()
        self.err.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(self, regex: str, timeout: float = 20.0, *, stream: str = "stderr", start: int = 0,
                      count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` lines of ``stream`` (from line ``start`` on) match ``regex``; return them.

        Fails the test (AssertionError with the whole output) when the deadline passes or the worker's
        output ends first.
        """
        reader = self.out if stream == "stdout" else self.err
        found = reader.wait_for(re.compile(regex), timeout, start, count)
        if len(found) < count:
            raise AssertionError(f"{count} line(s) matching {regex!r} on {stream} expected within {timeout}s, "
                                 f"found {len(found)} (exit code {self.proc.poll()})\n{self.output()}")
        return found

    def mark(self, stream: str = "stderr") -> int:
        """The number of lines read so far: pass it as ``start`` to look only at later lines."""
        reader = self.out if stream == "stdout" else self.err
        with reader.changed:
            return len(reader.lines)

    def ready(self, timeout: float = 20.0) -> None:
        """Wait for ``<hostname> ready.`` (needs ``-l INFO`` or lower)."""
        self.wait_for_line(r"\] \S+@\S+ ready\.$", timeout)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's main process only (not to its children)."""
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the worker to exit and for its output to be read; return its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {timeout}s\n{self.output()}") from None
        self.out.join(5)
        self.err.join(5)
        return code

    def stdout(self) -> str:
        return self.out.text()

    def stderr(self) -> str:
        return self.err.text()

    def output(self) -> str:
        return f"--- worker {self.args} stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def kill(self) -> None:
        """SIGKILL the worker and everything in its process group (idempotent); close the pipes."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group the worker leads (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.out.join(5)
        self.err.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def worker_factory() -> tuple[Callable[..., WorkerProcess], Callable[[], None]]:
    """``(start, cleanup)``: ``start(args, **kw)`` starts a :class:`WorkerProcess`; ``cleanup`` kills all."""
    started: list[WorkerProcess] = []

    def start(args: Sequence[str], **kwargs) -> WorkerProcess:
        worker = WorkerProcess(args, **kwargs)
        started.append(worker)
        return worker

    def cleanup() -> None:
        for worker in started:
            worker.kill()

    return start, cleanup


def plain_channel():
    """A channel on a new plain pika connection; close it with ``channel.connection.close()``."""
    return plain_connection().channel()


def wait_for_count(name: str, expected: int, timeout: float = 10.0) -> int:
    """Wait until queue ``name`` holds ``expected`` ready messages; return the last count seen."""
    deadline = time.monotonic() + timeout
    while True:
        count = ready_count(name)
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not synchronisation


def read_ids(folder: Path, kind: str) -> list[str]:
    """The task ids that ``ctasks`` recorded under ``folder/kind`` (``started`` or ``finished``)."""
    path = Path(folder) / kind
    return path.read_text().split() if path.exists() else []
