from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sandmeter.stack import PortInUseError, Stack, StackSettings
from sandmeter.stack.procs import free_port


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_up_twice_starts_nothing_new_and_status_answers(stack: Stack) -> None:
    assert stack.up() == []
    status = {s.name: s for s in stack.status()}
    assert set(status) == {"broker", "clickhouse", "prometheus", "alertmanager"}
    assert all(s.answering and s.pid for s in status.values()), status
    assert status["broker"].pid == stack.broker.pid()
    assert stack.alerting is not None
    assert status["prometheus"].pid == stack.alerting.prometheus.pid() != status["alertmanager"].pid


@pytest.mark.kafka
def test_taken_port_gives_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        st = Stack(StackSettings(state_dir=tmp_path, kafka_port=taken, clickhouse_tcp_port=free_port(),
                                 clickhouse_http_port=free_port()))  # fmt: skip
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{taken}"):
            st.up()
    assert st.down() == []


@pytest.mark.clickhouse
def test_clickhouse_config_is_own(stack: Stack) -> None:
    cfg = (stack.dir / "clickhouse" / "config.xml").read_text()
    assert "<listen_host>127.0.0.1</listen_host>" in cfg
    root = str((stack.dir / "clickhouse").resolve())
    assert f"<path>{root}/data/</path>" in cfg
    assert f"<users_config>{root}/users.xml</users_config>" in cfg
    assert f"<tcp_port>{stack.settings.clickhouse_tcp_port}</tcp_port>" in cfg


def test_unmarked_tests_cannot_reach_services() -> None:
    import clickhouse_driver

    with pytest.raises(RuntimeError, match="mark it"):
        clickhouse_driver.Client(host="127.0.0.1")
