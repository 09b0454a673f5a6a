"""``inspect``, ``control`` and ``events --dump``: Celery's output format and exit codes, driven through
``cli.main`` against a real worker on ``memory://`` (no RabbitMQ)."""

from __future__ import annotations

import uuid

import pytest

from minicelery import Celery
from minicelery.cli import main
from minicelery.cli_control import format_event
from minicelery.testing import start_worker


@pytest.fixture
def app():
    app = Celery("clictl", broker=f"memory://clictl-{uuid.uuid4().hex}", backend="rpc://", set_as_current=False)

    @app.task(name="clictl.add")
    def add(x, y):
        return x + y

    return app


def test_inspect_ping_prints_celerys_lines_and_counts_nodes(app, capsys):
    with start_worker(app, hostname="cli1@host"):
        assert main(["inspect", "ping", "-d", "cli1@host"], app=app) == 0
    assert capsys.readouterr().out == "->  cli1@host: OK\n        pong\n\n1 node online.\n"


def test_no_reply_exits_69_with_celerys_message(app, capsys):
    with start_worker(app, hostname="cli2@host"):
        assert main(["inspect", "ping", "-d", "ghost@x", "--timeout", "0.3"], app=app) == 69
        assert main(["control", "shutdown", "-d", "ghost@x", "--timeout", "0.3"], app=app) == 69
    captured = capsys.readouterr()
    assert captured.err == "Error: No nodes replied within time constraint\n" * 2
    assert captured.out == ""


def test_lists_dicts_errors_and_json(app, capsys):
    with start_worker(app, hostname="cli3@host"):
        assert main(["inspect", "registered", "-d", "cli3@host"], app=app) == 0
        assert capsys.readouterr().out == "->  cli3@host: OK\n    * clictl.add\n\n1 node online.\n"
        assert main(["inspect", "revoked", "-d", "cli3@host"], app=app) == 0
        assert capsys.readouterr().out == "->  cli3@host: OK\n    - empty -\n\n1 node online.\n"
        assert main(["inspect", "clock", "-d", "cli3@host"], app=app) == 0
        out = capsys.readouterr().out
        assert out.startswith('->  cli3@host: OK\n    {\n        "clock": ') and out.endswith("}\n    \n\n1 node online.\n")
        assert main(["control", "pool_grow", "2", "-d", "cli3@host"], app=app) == 0  # an error still exits 0
        assert capsys.readouterr().out == "->  cli3@host: ERROR\n        pool_grow is not supported by minicelery\n"
        assert main(["inspect", "ping", "-d", "cli3@host", "--json"], app=app) == 0
        assert capsys.readouterr().out == '{"cli3@host": {"ok": "pong"}}\n'
        assert main(["control", "revoke", "a1", "-d", "cli3@host", "--json"], app=app) == 0
        assert capsys.readouterr().out == '[{"cli3@host": {"ok": "tasks {\'a1\'} flagged as revoked"}}]\n'
        assert main(["control", "heartbeat", "-d", "cli3@host"], app=app) == 0
        assert capsys.readouterr().out == "->  cli3@host: OK\n    None\n"


def test_an_unknown_command_is_a_usage_error_listing_the_commands(app, capsys):
    assert main(["inspect", "bogus"], app=app) == 64
    assert capsys.readouterr().err == (
        "Error: Command bogus not recognized. Available inspect commands: active, active_queues, clock, "
        "conf, ping, query_task, registered, report, reserved, revoked, scheduled, stats\n")
    assert main(["control", "terminate", "KILL"], app=app) == 64


def test_events_dump_lines_match_celerys_dumper():
    names: dict[str, str] = {}
    common = {"hostname": "w1@vm", "utcoffset": 0.0, "pid": 20812, "local_received": 2.5}
    heartbeat = {**common, "clock": 20, "freq": 5, "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux",
                 "timestamp": 1796556605.172012, "type": "worker-heartbeat"}
    assert format_event(heartbeat, names) == (
        "w1@vm [2026-12-06 11:30:05.172012+00:00] heartbeat: clock=20, freq=5, local_received=2.5, pid=20812, "
        "sw_ident=py-celery, sw_sys=Linux, sw_ver=5.7.0, utcoffset=0.0")
    received = {**common, "clock": 26, "uuid": "u1", "name": "p.add", "args": "(2, 3)", "kwargs": "{}",
                "root_id": "u1", "parent_id": None, "retries": 0, "eta": None, "expires": None,
                "timestamp": 1796556608.963671, "type": "task-received"}
    assert format_event(received, names) == (
        "w1@vm [2026-12-06 11:30:08.963671+00:00] task received: p.add(u1) args=(2, 3) kwargs={} clock=26, "
        "eta=None, expires=None, local_received=2.5, parent_id=None, pid=20812, retries=0, root_id=u1, "
        "utcoffset=0.0")
    succeeded = {**common, "clock": 28, "uuid": "u1", "result": "5", "runtime": 0.002,
                 "timestamp": 1796556608.968197, "type": "task-succeeded"}
    assert format_event(succeeded, names) == (
        "w1@vm [2026-12-06 11:30:08.968197+00:00] task succeeded: p.add(u1) args=(2, 3) kwargs={} clock=28, "
        "local_received=2.5, pid=20812, result=5, runtime=0.002, utcoffset=0.0")
    offline = {"hostname": "w1@vm", "timestamp": 1796556715.163187, "type": "worker-offline"}
    assert format_event(offline, names) == "w1@vm [2026-12-06 11:31:55.163187+00:00] shutdown "
