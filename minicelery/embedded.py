"""The embedded broker from the command line: ``broker``, and ``worker --embedded-broker``'s child broker.

``python -m minicelery broker`` runs :mod:`minicelery.broker` in this process until SIGTERM or SIGINT;
``worker --embedded-broker`` starts that command as a child process on the broker URL's host and port
(local hosts only), waits until it listens, and stops it after the worker. The broker package itself
imports nothing of minicelery; this module is its only way in (besides :mod:`minicelery.cli`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from . import log
from .exceptions import BrokerDataError, ImproperlyConfigured, OperationalError
from .urls import parse_broker_url

__all__ = ["add_broker_parser", "broker_command", "default_data_dir", "with_embedded_broker", "BrokerChild",
           "LOCAL_HOSTS"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT = 30.0


def default_data_dir() -> str:
    """``$XDG_DATA_HOME/minicelery/broker``, else ``~/.local/share/minicelery/broker`` (per user)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "minicelery", "broker")


def add_broker_parser(sub: Any, count: Callable[[int], Callable[[str], int]]) -> None:
    """The ``broker`` sub-command's options (``count(n)``: cli's integer type with a minimum)."""
    broker = sub.add_parser("broker", help="run the embedded AMQP 0-9-1 broker (no RabbitMQ needed)")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    broker.add_argument("--port", type=count(0), default=5672, help="port (default 5672; 0: a free one)")
    broker.add_argument("--data-dir", help="where durable queues and messages live (default: per user, "
                                           "~/.local/share/minicelery/broker)")
    broker.add_argument("--memory", action="store_true", help="keep nothing on disk (nothing survives)")
    broker.add_argument("--user", help="the one user's name (default guest, or $MINICELERY_BROKER_USER)")
    broker.add_argument("--password", help="its password (default guest, or $MINICELERY_BROKER_PASSWORD)")
    broker.add_argument("--password-file", help="read the password from this file (its first line)")
    broker.add_argument("--sync-interval", type=float, default=0.2,
                        help="seconds between journal syncs when no publisher confirm waits (default 0.2)")
    broker.add_argument("--repair", action="store_true",
                        help="start despite a damaged journal: cut the damaged segment there")
    broker.add_argument("--max-memory", type=count(1), help="bytes of messages held before publishers are "
                                                            "blocked (default: a quarter of the RAM)")
    broker.add_argument("-l", "--loglevel", default="WARNING", help="DEBUG, INFO, WARNING, ERROR, CRITICAL")
    broker.add_argument("ctl", nargs="*", metavar="ctl COMMAND [ARG ...]",
                        help="ask the running broker of --data-dir: list_queues, list_connections, "
                             "list_channels, close_connection ID REASON, stop")


def broker_command(args: Any, level: int, version: str) -> int:
    """``broker``: serve until SIGTERM/SIGINT, then exit 0 (after flushing the journal).

    Raises:
        ImproperlyConfigured: default credentials on a non-local address.
        OperationalError: the port is taken (never a takeover).
        BrokerDataError: the data directory is locked by another broker or damaged.
    """
    if args.ctl:
        return control_command(args.ctl, args.data_dir or default_data_dir())
    log.setup(level)
    from .broker import Config, run  # the broker (and asyncio) load only for this command
    from .broker.journal import StoreError

    user = args.user or os.environ.get("MINICELERY_BROKER_USER") or "guest"
    password = args.password or _password_file(args.password_file) or \
        os.environ.get("MINICELERY_BROKER_PASSWORD") or "guest"
    if args.host not in LOCAL_HOSTS and user == "guest":
        raise ImproperlyConfigured(f"refusing to listen on {args.host} with the default guest account: give "
                                   "--user and --password (guest may only log in from this machine)")
    data_dir = None if args.memory else (args.data_dir or default_data_dir())
    config = Config(host=args.host, port=args.port, data_dir=data_dir, user=user, password=password,
                    version=version, max_memory=args.max_memory or 0, sync_interval=args.sync_interval,
                    repair=args.repair)
    try:
        run(config)
    except StoreError as exc:
        raise BrokerDataError(str(exc))
    except OSError as exc:
        raise OperationalError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. Another "
                               "broker (RabbitMQ?) may be using that port: stop it or choose another --port.")
    return 0


def _password_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\n")
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read --password-file {path}: {exc.strerror or exc}")


def control_command(words: list[str], data_dir: str) -> int:
    """``broker ctl COMMAND [ARGS]``: one request to the control socket of the broker on ``data_dir``."""
    if words[0] != "ctl" or len(words) < 2:
        print("minicelery broker: expected `broker ctl COMMAND [ARG ...]`", file=sys.stderr)
        return 64
    path = os.path.join(data_dir, "control.sock")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(json.dumps({"command": words[1], "args": words[2:]}).encode() + b"\n")
            reply = json.loads(sock.makefile("rb").readline())
    except OSError as exc:
        raise OperationalError(f"no broker answers on {path} ({exc.strerror or exc}): is one running with "
                               f"--data-dir {data_dir}?")
    if not reply.get("ok"):
        print(f"Error: {reply.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(reply["result"], indent=1))
    return 0


def with_embedded_broker(broker_url: str | None, run: Callable[[], int]) -> int:
    """``worker --embedded-broker``: run ``run()`` (the worker) with a broker child beside it."""
    child = BrokerChild(broker_url)
    child.start()
    try:
        return run()
    finally:
        child.stop()


class BrokerChild:
    """The broker process ``worker --embedded-broker`` runs beside the worker."""

    def __init__(self, broker_url: str | None, data_dir: str | None = None, port: int | None = None) -> None:
        address = parse_broker_url(broker_url)
        if address.host not in LOCAL_HOSTS:
            raise ImproperlyConfigured(f"--embedded-broker serves this machine only, but the broker URL "
                                       f"names "
                                       f"{address.host!r}: use amqp://guest:guest@127.0.0.1:{address.port}//")
        self.address = address
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.port = address.port if port is None else port  # 0: a free one, known after start()

    def start(self) -> None:
        """Start the broker and wait until it listens (its first line of output says so)."""
        host = "127.0.0.1" if self.address.host == "localhost" else self.address.host
        command = [sys.executable, "-m", "minicelery", "broker", "--host", host,
                   "--port", str(self.port)]
        if self.data_dir:
            command += ["--data-dir", self.data_dir]
        env = dict(os.environ, MINICELERY_BROKER_USER=self.address.userid,
                   MINICELERY_BROKER_PASSWORD=self.address.password)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "minicelery broker listening on ...", or EOF when it failed
        if "listening" not in line:
            code = self.process.wait()
            raise OperationalError(f"the embedded broker did not start on {host}:{self.port} "
                                   f"(exit {code}); see its message above")
        self.port = int(line.rsplit(":", 1)[1])  # the port it chose, when told 0

    def stop(self) -> int:
        """Stop the broker (SIGTERM: it flushes its journal) and return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
