"""The CLI's errors are one actionable line (exit 2 for a bad setting, 3 for a dependency that
does not answer), --help lists each service's variables, and every service exports build and
process metrics without `_created` series."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest

from contracts.metrics import counter, service_registry
from contracts.names import databases
from contracts.settings import variables
from sandmeter.cli.common import CliError, served_registry
from sandmeter.stack import Stack
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import ADMIN


def sandmeter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDMETER_")}
    return subprocess.run(
        [sys.executable, "-m", "sandmeter.cli", *args], env={**clean, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "variable", "value"),
    [
        (["stack", "status"], {"SANDMETER_STACK_KAFKA_PORT": "abc"}, "SANDMETER_STACK_KAFKA_PORT", "'abc'"),
        (["collect"], {"SANDMETER_COLLECTOR_SANDBOX_DIRS": "/run/vc/sbs"}, "SANDMETER_COLLECTOR_SANDBOX_DIRS",
         "JSON list"),
        (["process"], {"SANDMETER_PROCESSOR_LOG_LEVEL": "chatty"}, "SANDMETER_PROCESSOR_LOG_LEVEL", "'DEBUG'"),
        (["scale"], {"SANDMETER_SCALE_CLICKHOUSE_PORT": "70000"}, "SANDMETER_SCALE_CLICKHOUSE_PORT", "65535"),
        (["stack", "status"], {"SANDMETER_STACK_ALERT_WEBHOOK_URL": "alerts.example.com"},
         "SANDMETER_STACK_ALERT_WEBHOOK_URL", "'alerts.example.com'"),
        (["stack", "status"], {"SANDMETER_STACK_ALERT_GROUP_INTERVAL_S": "0"}, "SANDMETER_STACK_ALERT_GROUP_INTERVAL_S",
         "greater than 0"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_the_variable_and_exits_2(
    args: list[str], env: dict[str, str], variable: str, value: str
) -> None:
    r = sandmeter(*args, **env)
    assert r.returncode == 2, r.stderr
    line = one_line(r)
    assert variable in line and value in line, line


def test_log_level_is_case_insensitive() -> None:
    # a lower-case level is a valid setting: the command gets past settings to the dependency check
    r = sandmeter("api", "keys", "list", SANDMETER_API_LOG_LEVEL="debug", SANDMETER_API_CLICKHOUSE_PORT="1")
    assert r.returncode == 3, r.stderr


@pytest.mark.parametrize(
    ("args", "env", "address", "setting"),
    [
        (["migrate"], {"SANDMETER_MIGRATE_CLICKHOUSE_PORT": "{port}", "SANDMETER_MIGRATE_WAIT_S": "1.5"},
         "127.0.0.1:{port}", "SANDMETER_MIGRATE_CLICKHOUSE_PORT"),
        (["reconcile"], {"SANDMETER_PROCESSOR_CLICKHOUSE_PORT": "{port}"}, "127.0.0.1:{port}",
         "SANDMETER_PROCESSOR_CLICKHOUSE_PORT"),
        (["process"], {"SANDMETER_PROCESSOR_KAFKA_BOOTSTRAP": "127.0.0.1:{port}"}, "127.0.0.1:{port}",
         "SANDMETER_PROCESSOR_KAFKA_BOOTSTRAP"),
        (["api", "keys", "list"], {"SANDMETER_API_CLICKHOUSE_PORT": "{port}"}, "127.0.0.1:{port}",
         "SANDMETER_API_CLICKHOUSE_PORT"),
    ],
)  # fmt: skip
def test_a_dependency_down_is_one_line_naming_its_address_and_setting_and_exits_3(
    args: list[str], env: dict[str, str], address: str, setting: str
) -> None:
    port = str(free_port())  # nothing listens there
    r = sandmeter(*args, **{k: v.format(port=port) for k, v in env.items()})
    assert r.returncode == 3, r.stderr
    line = one_line(r)
    assert address.format(port=port) in line and setting in line, line


def test_a_missing_plans_directory_is_a_settings_error(tmp_path: Any) -> None:
    r = sandmeter("dashboards", "--out", str(tmp_path / "out"), "--plans", str(tmp_path / "none"))
    assert r.returncode == 2 and "--plans" in one_line(r)


def test_an_expected_failure_stays_one_line_with_verbose() -> None:
    r = sandmeter("-v", "migrate", SANDMETER_MIGRATE_CLICKHOUSE_PORT=str(free_port()))
    assert r.returncode == 3  # an expected failure stays one line even with -v
    assert "Traceback" not in r.stderr


def test_help_of_each_service_lists_its_variables_with_defaults() -> None:
    from collectors import CollectorSettings
    from pipeline import ProcessorSettings

    for cmd, cls in (("collect", CollectorSettings), ("process", ProcessorSettings)):
        out = sandmeter(cmd, "--help").stdout
        for var, default, _ in variables(cls):
            assert var in out and default in out, (cmd, var)
    assert "127.0.0.1:19092" in sandmeter("process", "--help").stdout


def test_version() -> None:
    from sandmeter import __version__

    r = sandmeter("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sandmeter {__version__}"


def test_service_registry_has_build_and_process_metrics_and_no_created_series() -> None:
    reg = service_registry("processor", "9.9.9")
    counter("sandmeter_test_things_total", "things", reg).inc()
    text = generate_latest(reg).decode()
    assert 'sandmeter_build_info{python="' in text and 'service="processor",version="9.9.9"} 1.0' in text
    assert "process_resident_memory_bytes" in text and "python_info" in text
    assert "sandmeter_test_things_total 1.0" in text
    assert "_created" not in text


def test_a_taken_metrics_port_names_the_variable() -> None:
    from pipeline import ProcessorSettings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = ProcessorSettings(metrics_host="127.0.0.1", metrics_port=port)
        with pytest.raises(CliError) as exc:
            served_registry(s, "processor")
    assert exc.value.code == 2 and "SANDMETER_PROCESSOR_METRICS_PORT" in exc.value.message


def test_the_registry_is_served() -> None:
    from pipeline import ProcessorSettings

    port = free_port()
    served_registry(ProcessorSettings(metrics_host="127.0.0.1", metrics_port=port), "processor")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "sandmeter_build_info" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["stack", "watch", "processor"], "'processor': expected SERVICE=PORT"),
        (["stack", "watch", "api=8080"], "prometheus is not running"),
        (["dashboards", "--out", "/tmp/x", "--alert-webhook-url", "ftp://x"], "expected an http(s) URL"),
    ],
)
def test_bad_watch_targets_and_webhook_urls_are_one_line_and_exit_2(args: list[str], says: str, tmp_path: Any) -> None:
    r = sandmeter(*args, SANDMETER_STACK_STATE_DIR=str(tmp_path), SANDMETER_STACK_PROMETHEUS_PORT=str(free_port()))
    assert r.returncode == 2, r.stderr
    assert says in one_line(r)


def test_watch_targets_name_a_service_a_port_and_for_a_collector_its_node() -> None:
    from sandmeter.cli.stack import _targets
    from sandmeter.stack import Target

    assert _targets(["processor=9465", "collector:node-a=9464", "collector:node-b=9474", "api=8080"]) == {
        "sandmeter-processor": [Target(9465)], "sandmeter-api": [Target(8080)],
        "sandmeter-collector": [Target(9464, "node-a"), Target(9474, "node-b")],
    }  # fmt: skip
    for bad in ("collector=9464", "api:n1=8080", "scale=70000", "scale=0", "web=80", "api=80x"):
        with pytest.raises(CliError, match="expected SERVICE=PORT"):
            _targets([bad])


def _forward_after(delay_s: float, port: int, target: int) -> None:
    """After `delay_s`, forwards connections to 127.0.0.1:`port` to `target`: a ClickHouse that
    starts answering late, as in a container started next to it."""
    import threading
    import time

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        time.sleep(delay_s)
        listener = socket.create_server(("127.0.0.1", port))
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


@pytest.mark.clickhouse
def test_migrate_waits_for_clickhouse_to_answer_then_migrates(stack: Stack) -> None:

    port, name = free_port(), f"t_wait_{os.getpid()}"
    admin = stack.ch(name, home="system")
    try:
        _forward_after(2.0, port, stack.settings.clickhouse_tcp_port)
        r = sandmeter("migrate", SANDMETER_MIGRATE_CLICKHOUSE_PORT=str(port), SANDMETER_MIGRATE_WAIT_S="60",
                      SANDMETER_MIGRATE_CLICKHOUSE_DATABASE=name, **stack.users.env("MIGRATE", ADMIN))  # fmt: skip
        assert r.returncode == 0 and "applied" in r.stdout, r.stderr
        assert admin.execute(f"SELECT count() FROM {name}_internal.sandmeter_migrations")[0][0] > 0
    finally:
        for each in databases(name):
            admin.execute(f"DROP DATABASE IF EXISTS {each}")


@pytest.mark.clickhouse
@pytest.mark.parametrize("user", ["nobody", "default"])
def test_a_refused_clickhouse_login_ends_at_once_naming_the_user_and_password_variables(
    stack: Stack, user: str
) -> None:
    # a wait of 10 minutes: were the refusal waited on, the 60 s subprocess timeout would fail the test
    r = sandmeter(
        "migrate", SANDMETER_MIGRATE_CLICKHOUSE_PORT=str(stack.settings.clickhouse_tcp_port),
        SANDMETER_MIGRATE_CLICKHOUSE_USER=user, SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD="pw#not-this-one",
        SANDMETER_MIGRATE_WAIT_S="600",
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    line = one_line(r)
    assert f"ClickHouse at 127.0.0.1:{stack.settings.clickhouse_tcp_port} refused user {user!r}" in line, line
    assert "SANDMETER_MIGRATE_CLICKHOUSE_USER" in line and "SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD_FILE" in line
    assert "pw#not-this-one" not in r.stderr + r.stdout


@pytest.mark.parametrize(
    ("command", "env"),
    [
        ("process", "SANDMETER_PROCESSOR"),
        ("scale", "SANDMETER_SCALE"),
        ("migrate", "SANDMETER_MIGRATE"),
        ("api", "SANDMETER_API"),  # serving (its ClickHouse away): uvicorn's own shutdown, then exit 0
    ],
)
def test_a_sigterm_while_waiting_for_a_dependency_ends_the_service_cleanly_at_once(command: str, env: str) -> None:
    """Kafka (or, for migrate, ClickHouse) never answers: the service waits in its start-up
    probe, and a SIGTERM there ends it with exit 0 within a second or two, not after the probe."""
    import signal
    import time

    away = str(free_port())  # nothing listens there
    e = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SANDMETER_")},
        f"{env}_CLICKHOUSE_PORT": away,
        f"{env}_KAFKA_BOOTSTRAP": f"127.0.0.1:{away}",
        f"{env}_METRICS_PORT": "0",
        "SANDMETER_MIGRATE_WAIT_S": "600",
        "SANDMETER_API_PORT": str(free_port()),
    }
    p = subprocess.Popen([sys.executable, "-m", "sandmeter.cli", command], env=e, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)  # past the imports, inside the probe (it waits up to 10 s, migrate 600 s)
    assert p.poll() is None, p.stderr.read() if p.stderr else ""
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=30)
    took = time.monotonic() - t0
    assert rc == 0 and took < 3.0, (rc, took, p.stderr.read() if p.stderr else "")
