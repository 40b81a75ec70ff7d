"""Kafka and ClickHouse credentials in the settings parts: every combination either gives
client arguments kafka-python knows, or is a settings error naming the variables; a password
never shows in a repr, a dump, the client arguments' repr or an error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors import CollectorSettings
from contracts.settings import Part, SettingsProblem, load
from pipeline import MigrateSettings, ProcessorSettings
from scaling import ScaleSettings

PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
MECHANISMS = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
# marked so that none occurs in a repr by chance; no whitespace (a file's newline is stripped)
passwords = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=40).map(
    lambda t: f"pw#{t}"
)


@contextmanager
def environment(**env: str) -> Iterator[None]:
    """Exactly these SANDMETER_* variables (hypothesis cannot use function-scoped fixtures)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDMETER_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        yield


def loaded(cls: type[Part], **env: str) -> Any:
    with environment(**env):
        return load(cls, os.environ)


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("secrets")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")  # only its existence is checked here
    return d


@settings(max_examples=300, deadline=None)
@given(
    protocol=st.sampled_from(PROTOCOLS),
    mechanism=st.sampled_from(MECHANISMS),
    user=st.sampled_from(["", "collector"]),
    password=passwords,
    password_from=st.sampled_from(["none", "variable", "file"]),
    with_ca=st.booleans(),
)
def test_every_security_combination_gives_known_client_arguments_or_names_the_variables(
    secret_files: Path, protocol: str, mechanism: str, user: str, password: str, password_from: str, with_ca: bool
) -> None:
    # the classes themselves: the unit-test guard replaces only `kafka.KafkaProducer` etc.
    from kafka.admin import KafkaAdminClient
    from kafka.consumer import KafkaConsumer
    from kafka.producer import KafkaProducer

    p = "SANDMETER_COLLECTOR_KAFKA_"
    env = {f"{p}SECURITY_PROTOCOL": protocol.lower(), f"{p}SASL_MECHANISM": mechanism, f"{p}USERNAME": user}
    pw_file = secret_files / f"pw-{abs(hash(password))}"
    if password_from == "variable":
        env[f"{p}PASSWORD"] = password
    elif password_from == "file":
        pw_file.write_text(password + "\n")
        env[f"{p}PASSWORD_FILE"] = str(pw_file)
    if with_ca:
        env[f"{p}CA_FILE"] = str(secret_files / "ca.pem")
    sasl, tls, has_pw = protocol.startswith("SASL"), protocol.endswith("SSL"), password_from != "none"
    credentials_fit = (bool(user) and has_pw) if sasl else not (user or has_pw)
    valid = credentials_fit and not (sasl and not tls and mechanism == "PLAIN") and tls == with_ca
    try:
        s = loaded(CollectorSettings, **env)
    except SettingsProblem as exc:
        assert not valid, exc
        assert p in str(exc) and password not in str(exc), exc
        return
    assert valid, env
    kw = s.kafka_kwargs()
    assert kw["security_protocol"] == protocol and kw["bootstrap_servers"] == s.kafka_bootstrap
    assert ("sasl_plain_password" in kw) == sasl and ("ssl_cafile" in kw) == tls
    if sasl:
        assert (kw["sasl_mechanism"], kw["sasl_plain_username"], str(kw["sasl_plain_password"])) == (
            mechanism, user, password,
        )  # fmt: skip
    if tls:
        assert kw["ssl_cafile"] == str(secret_files / "ca.pem") and kw["ssl_check_hostname"] is True
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):  # kafka-python refuses unknown keys
        assert set(kw) <= set(client.DEFAULT_CONFIG), client
    for shown in (repr(s), str(s), s.model_dump_json(), repr(kw), str(kw)):
        assert password not in shown


@settings(max_examples=50, deadline=None)
@given(password=passwords)
def test_a_clickhouse_password_never_shows_and_reaches_the_client(password: str) -> None:
    s = loaded(ProcessorSettings, SANDMETER_PROCESSOR_CLICKHOUSE_USER="sandmeter_writer",
               SANDMETER_PROCESSOR_CLICKHOUSE_PASSWORD=password)  # fmt: skip
    for shown in (repr(s), str(s), s.model_dump_json()):
        assert password not in shown
    seen: dict[str, Any] = {}
    with mock.patch("clickhouse_driver.Client", lambda **kw: seen.update(kw) or mock.Mock()):
        s.clickhouse()
    assert (seen["user"], seen["password"]) == ("sandmeter_writer", password)


def test_defaults_keep_the_local_stack_working() -> None:
    s = loaded(ScaleSettings)
    assert s.kafka_kwargs() == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    assert (s.clickhouse_user, s.clickhouse_password.get_secret_value()) == ("default", "")


def test_a_password_file_is_read_and_both_sources_at_once_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "writer"
    f.write_text("s3cret-from-a-docker-secret\n")
    s = loaded(MigrateSettings, SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD_FILE=str(f))
    seen: dict[str, Any] = {}
    with mock.patch("clickhouse_driver.Client", lambda **kw: seen.update(kw) or mock.Mock()):
        s.clickhouse()
    assert seen["password"] == "s3cret-from-a-docker-secret"
    with pytest.raises(SettingsProblem, match=r"SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD and .*_PASSWORD_FILE"):
        loaded(MigrateSettings, SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD_FILE=str(f),
               SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD="other")  # fmt: skip
    with pytest.raises(SettingsProblem, match="SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD_FILE='/nonexistent'"):
        loaded(MigrateSettings, SANDMETER_MIGRATE_CLICKHOUSE_PASSWORD_FILE="/nonexistent")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_password_file_is_a_settings_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("x")
    f.chmod(0)
    with pytest.raises(SettingsProblem, match=r"SANDMETER_SCALE_CLICKHOUSE_PASSWORD_FILE=.*cannot read it"):
        loaded(ScaleSettings, SANDMETER_SCALE_CLICKHOUSE_PASSWORD_FILE=str(f))


def test_a_settings_error_shows_only_its_own_variable() -> None:
    with pytest.raises(SettingsProblem) as exc:
        loaded(ProcessorSettings, SANDMETER_PROCESSOR_KAFKA_SECURITY_PROTOCOL="SASL_TLS",
               SANDMETER_PROCESSOR_KAFKA_PASSWORD="hunter2-hunter2")  # fmt: skip
    assert "SANDMETER_PROCESSOR_KAFKA_SECURITY_PROTOCOL='SASL_TLS'" in str(exc.value)
    assert "hunter2" not in str(exc.value)
