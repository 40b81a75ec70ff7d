"""docker-compose.yml works as shipped, as far as can be checked without a Docker engine: it is
valid (`docker-compose config -q`), and the parsed, interpolated file has the properties a
working production stack needs (pinned images, healthchecks on everything waited on, one-shots
retried, persistent Kafka logs, a listener the host-network collector reaches, SASL_SSL and a
least-privilege ClickHouse user for every service, passwords only from the env file, nothing
downloaded at start, a non-root image with every package). Every SANDMETER_* variable it sets
is loaded through the service's real settings class, with the secrets
scripts/compose-secrets.sh generates."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from billing import ApiSettings
from collectors import CollectorSettings
from contracts import names
from contracts.settings import Part, load, variables
from pipeline import MigrateSettings, ProcessorSettings, RetentionSettings
from sandmeter.cli import parser
from scaling import ScaleSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, type[Part]] = {
    "collect": CollectorSettings, "process": ProcessorSettings, "migrate": MigrateSettings, "api": ApiSettings,
    "scale": ScaleSettings, "retention": RetentionSettings, "invoices": ApiSettings,
}  # fmt: skip
ONE_SHOTS = {"migrate", "kafka-init"}
# where each table lives (contracts/names.py), for the database compose configures
DATABASE_OF = {table: names.Tables("sandmeter").db(table) for table in names.DATABASE_SUFFIX}
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="make test installs docker-compose")


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip


def env_keys(path: Path) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in path.read_text().splitlines() if ln and not ln.startswith("#"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What scripts/compose-secrets.sh writes: .env and secrets/."""
    d = tmp_path_factory.mktemp("compose")
    subprocess.run([str(ROOT / "scripts" / "compose-secrets.sh"), str(d)], check=True, capture_output=True, timeout=120)
    return d


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return spec


@pytest.fixture(scope="module")
def services(generated: Path) -> dict[str, Any]:
    """The file as docker-compose runs it: anchors merged, variables interpolated."""
    if shutil.which("docker-compose") is None:
        pytest.skip("make test installs docker-compose")
    r = compose(generated / ".env", "config")
    assert r.returncode == 0, r.stderr
    spec: dict[str, Any] = yaml.safe_load(r.stdout)
    return spec["services"]  # type: ignore[no-any-return]


def env(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, of a service's volumes."""
    out = {}
    for v in svc.get("volumes") or []:
        src, dst = v.split(":")[:2]
        out[dst] = src
    return out


def command(svc: dict[str, Any]) -> str:
    return str(svc["command"][1]) if isinstance(svc.get("command"), list) else ""


def own(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if s.get("image", "").startswith("sandmeter:")}


@needs_compose
def test_compose_file_is_valid_with_the_committed_env_example() -> None:
    r = compose(ROOT / "env.example", "config", "-q")
    assert r.returncode == 0, r.stderr


def test_the_generated_env_file_has_exactly_the_variables_of_env_example_and_compose(generated: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert set(env_keys(generated / ".env")) == set(env_keys(ROOT / "env.example")) >= used
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and "secrets/" in ignored


def test_images_are_pinned(services: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    grafana_df = (ROOT / "deploy" / "grafana" / "Dockerfile").read_text()
    for name, s in services.items():
        image = s["image"]
        assert re.search(r":v?\d+\.\d+\.\d+", image) and not image.endswith(":latest"), (name, image)
        if name in own(services):
            assert image == f"sandmeter:{version}", name
    base = re.search(r"^FROM grafana/grafana:(\S+)", grafana_df, re.M)
    plugin = re.search(r"CLICKHOUSE_PLUGIN_VERSION=(\S+)", grafana_df)
    assert base and plugin and services["grafana"]["image"] == f"sandmeter-grafana:{base[1]}-clickhouse-{plugin[1]}"


def test_everything_waited_on_is_healthy_or_done_and_one_shots_retry(services: dict[str, Any]) -> None:
    for name, s in services.items():
        if name in ONE_SHOTS:
            assert s["restart"] == "on-failure", name  # retried until it exits 0, then left alone
        elif "tools" not in s.get("profiles", []):
            assert s["restart"] == "unless-stopped" and "healthcheck" in s, name
        for dep, spec in (s.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == want, (name, dep)
            assert want != "service_healthy" or "healthcheck" in services[dep], dep
    for name in ("processor", "api", "scale"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert float(env(services["migrate"])["SANDMETER_MIGRATE_WAIT_S"]) > 0  # and waits itself, bounded


def test_kafka_keeps_its_log_in_the_volume_and_the_host_collector_reaches_a_tls_listener(
    services: dict[str, Any],
) -> None:
    k = env(services["kafka"])
    log_dir = k["KAFKA_LOG_DIRS"]
    assert not mounts(services["kafka"])[log_dir].startswith("/"), "a named volume"
    advertised = dict(x.split("://") for x in k["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocol = dict(x.split(":") for x in k["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert all(protocol[name] == "SASL_SSL" for name in advertised), protocol
    assert k["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false" and k["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    collector = services["collector"]
    assert collector["network_mode"] == "host"
    bootstrap = env(collector)["SANDMETER_COLLECTOR_KAFKA_BOOTSTRAP"]
    assert bootstrap in advertised.values()
    host, port = bootstrap.rsplit(":", 1)
    assert f"{host}:{port}:{port}/tcp" in services["kafka"]["ports"], "published on the host's loopback only"


def test_every_kafka_client_logs_in_with_scram_over_tls_and_only_does_its_part(services: dict[str, Any]) -> None:
    init = (ROOT / "deploy" / "kafka" / "init.sh").read_text()
    users = set()
    for name, s in own(services).items():
        e, prefix = env(s), str(SETTINGS[command(s)].model_config["env_prefix"])
        if f"{prefix}KAFKA_BOOTSTRAP" not in e:
            continue
        assert e[f"{prefix}KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert e[f"{prefix}KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert e[f"{prefix}KAFKA_CA_FILE"] in mounts(s), name
        users.add(e[f"{prefix}KAFKA_USERNAME"])
    assert users == {"collector", "processor", "scale"}
    assert re.search(r"for user in (.+); do", init)[1].split() == sorted(users)  # type: ignore[index]
    topics = re.search(r"for topic in (.+); do", init)[1].split()  # type: ignore[index]
    assert tuple(topics) == names.ALL_TOPICS
    assert f"--group {ProcessorSettings().group_id}" in init
    acls = re.findall(r"^acl (\w+) (.+)$", init, re.M)
    assert {(u, t) for u, rest in acls for t in re.findall(r"--topic (\S+)", rest) if "Write" in rest} == {
        ("collector", names.TOPIC_SAMPLES), ("processor", names.TOPIC_DEADLETTER),
        ("processor", names.TOPIC_ALERTS), ("scale", names.TOPIC_SCALE),
    }  # fmt: skip


def test_every_service_variable_is_a_real_setting_and_loads_with_the_generated_secrets(
    services: dict[str, Any], generated: Path
) -> None:
    for name, s in own(services).items():
        cls = SETTINGS[command(s)]
        known = {v for v, _, _ in variables(cls)}
        e = env(s)
        assert {k for k in e if k.startswith("SANDMETER_")} <= known, (name, set(e) - known)  # no typo is ignored
        # a mounted file's container path -> the file scripts/compose-secrets.sh made
        files = {dst: src.replace(str(ROOT / "secrets"), str(generated / "secrets")) for dst, src in mounts(s).items()}
        with mock.patch.dict("os.environ", {k: files.get(v, v) for k, v in e.items()}, clear=True):
            import os

            settings = load(cls, os.environ)
        if hasattr(settings, "kafka_kwargs"):
            settings.kafka_kwargs()  # a password file or CA that cannot be read would raise here


def test_no_service_is_clickhouse_default_and_each_user_exists_with_a_hash_from_the_env_file(
    services: dict[str, Any],
) -> None:
    users = ET.parse(ROOT / "deploy" / "clickhouse" / "users-sandmeter.xml").getroot().find("users")
    assert users is not None
    defined = {u.tag: u for u in users}
    ch = env(services["clickhouse"])
    admin = ch["CLICKHOUSE_USER"]  # the image's entrypoint creates it and removes `default`
    assert "default" not in defined and admin != "default"
    for u in defined.values():
        pw = u.find("password_sha256_hex")
        assert pw is not None and pw.get("from_env") in ch, u.tag
    used = {}
    for name, s in own(services).items():
        e = env(s)
        # the main connection's user (the invoice job has a second, billing one)
        user = next((v for k, v in e.items() if k.endswith("_CLICKHOUSE_USER") and "_BILLING_" not in k), None)
        if any(k.endswith("_CLICKHOUSE_HOST") for k in e):
            assert user is not None and user != "default" and (user in defined or user == admin), name
            used[name] = user
    # one user per component; the admin for the two DDL jobs (migrations, dropping old days); the
    # invoice job reads usage as the API does and appends invoices as the keys job's user
    assert used["migrate"] == used["retention"] == admin, used
    fin = env(services["finalize"])
    assert used["finalize"] == used["api"] and fin["SANDMETER_API_BILLING_CLICKHOUSE_USER"] == used["keys"], used
    one_each = {k: v for k, v in used.items() if k not in ("retention", "finalize")}
    assert len(set(one_each.values())) == len(one_each), used
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/sandmeter.yaml").read_text())
    [ds] = [d for d in datasource["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    assert ds["jsonData"]["username"] in defined
    assert ds["secureJsonData"]["password"].lstrip("$") in env(services["grafana"])


def test_clickhouse_grants_give_each_user_only_its_tables(services: dict[str, Any]) -> None:
    users = ET.parse(ROOT / "deploy" / "clickhouse" / "users-sandmeter.xml").getroot().find("users")
    assert users is not None
    grants: dict[str, set[tuple[str, str, str]]] = {}
    for u in users:
        for q in u.iter("query"):
            m = re.fullmatch(r"GRANT ([A-Z ,]+) ON (\w+)\.(\w+)", q.text or "")
            assert m, (u.tag, q.text)  # table by table, never db.*
            db, table = m[2], m[3]
            if db != "system":
                assert table in DATABASE_OF and db == DATABASE_OF[table], (u.tag, q.text)
            grants.setdefault(u.tag, set()).update((p.strip(), db, table) for p in m[1].split(","))
    tables = {u: {t for _, db, t in g if db != "system"} for u, g in grants.items()}
    billing = {names.T_API_KEYS, names.T_INVOICES}
    internal_or_raw = {names.T_SAMPLES, names.T_RAW_SERIES, names.T_LATE, names.T_CHECKPOINTS}
    assert not tables["sandmeter_dashboards"] & (billing | {names.T_CHECKPOINTS, names.T_USAGE})
    assert not tables["sandmeter_writer"] & billing
    assert not tables["sandmeter_api"] & internal_or_raw and tables["sandmeter_billing"] == billing
    assert tables["sandmeter_scale"] == {names.T_FUNCTION_LOAD}
    readers = ("sandmeter_dashboards", "sandmeter_scale")
    assert all(p == "SELECT" for u in readers for p, _, _ in grants[u])
    profiles = {u.tag: u.findtext("profile") for u in users}
    assert all(profiles[u] in ("sm_reader", "sm_dashboards") for u in readers)  # readonly=1
    writes = {(u, t) for u, g in grants.items() for p, _, t in g if p != "SELECT"}
    assert not {t for u, t in writes if u == "sandmeter_api"}  # reads never write
    assert {p for p, _, _ in grants["sandmeter_writer"]} == {"SELECT", "INSERT"}  # no ALTER: retention is the admin's
    assert not {u for u, _ in writes} & set(readers)
    mounted = mounts(services["clickhouse"])
    assert "/etc/clickhouse-server/users.d" not in mounted, "one file: the entrypoint writes users.d itself"


def test_grafana_downloads_nothing_at_start(services: dict[str, Any]) -> None:
    g = services["grafana"]
    assert not {k for k in env(g) if k in ("GF_INSTALL_PLUGINS", "GF_PLUGINS_PREINSTALL", "GF_PLUGINS_PREINSTALL_SYNC")}
    dockerfile = (Path(g["build"]["context"]) / "Dockerfile").read_text()
    assert re.search(r"plugins install grafana-clickhouse-datasource \"?\$CLICKHOUSE_PLUGIN_VERSION", dockerfile)


def test_the_image_runs_unbuffered_as_a_user_and_holds_every_package() -> None:
    df = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", df, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^ENV .*PYTHONUNBUFFERED=1", df, re.M)
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {p.rstrip("*") for p in found["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", df, re.M))
    assert packages == copied and all((ROOT / p / "__init__.py").exists() for p in packages)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "secrets", ".venv"} <= set(ignored)


def test_project_services_run_real_subcommands(raw: dict[str, Any]) -> None:
    services = raw["services"]
    subcommands = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    mine = {k: v for k, v in services.items() if "command" in v and v["command"][0] == "sandmeter"}
    assert {"collector", "processor", "api", "migrate", "scale", "keys", "retention"} <= set(mine)
    for name, svc in mine.items():
        assert svc["command"][1] in subcommands and svc["command"][1] in SETTINGS, name
    assert {"kafka", "kafka-init", "clickhouse", "grafana", "prometheus"} <= set(services)


def test_passwords_come_only_from_the_env_file(raw: dict[str, Any]) -> None:
    for name, svc in raw["services"].items():
        for k, v in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SHA256|SECRET|CREDENTIAL", k) and not k.startswith("KAFKA_SSL_"):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(v)), (name, k, v)


def test_the_secrets_script_makes_matching_hashes_a_verifiable_broker_certificate_and_a_keystore(
    generated: Path,
) -> None:
    e = env_keys(generated / ".env")
    for user in ("WRITER", "API", "BILLING", "SCALE", "DASHBOARDS"):
        assert hashlib.sha256(e[f"CLICKHOUSE_{user}_PASSWORD"].encode()).hexdigest() == e[f"CLICKHOUSE_{user}_SHA256"]
    assert len(set(v for k, v in e.items() if k.endswith("_PASSWORD"))) == sum(k.endswith("_PASSWORD") for k in e)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", e["KAFKA_CLUSTER_ID"])
    s, tls, kafka = generated / "secrets", generated / "secrets" / "tls", generated / "secrets" / "kafka"

    def openssl(*args: str) -> str:
        return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout

    assert "OK" in openssl("verify", "-CAfile", str(s / "kafka-ca.pem"), str(tls / "broker.pem"))
    sans = openssl("x509", "-in", str(tls / "broker.pem"), "-noout", "-ext", "subjectAltName")
    assert "DNS:kafka" in sans and "IP Address:127.0.0.1" in sans  # the two names clients dial
    openssl("pkcs12", "-in", str(kafka / "kafka.keystore.p12"), "-passin", f"file:{kafka / 'keystore_creds'}",
            "-noout")  # fmt: skip
    admin = e["KAFKA_ADMIN_PASSWORD"]
    assert f'password="{admin}"' in (kafka / "kafka_server_jaas.conf").read_text()
    assert f'password="{admin}"' in (kafka / "admin.properties").read_text()
    assert (s.stat().st_mode & 0o077) == 0 and (tls.stat().st_mode & 0o077) == 0  # nobody else on the host
    assert subprocess.run([str(ROOT / "scripts" / "compose-secrets.sh"), str(generated)], capture_output=True,
                          check=False).returncode == 1  # never overwrites  # fmt: skip


@pytest.mark.fake_kafka
def test_the_compose_collector_settings_and_generated_certificate_pass_a_real_tls_scram_login(
    services: dict[str, Any], generated: Path
) -> None:
    """kafka-python's real client, with the collector's compose settings and the generated
    CA, logs in to the fake broker (tests/scram_broker.py) serving the generated certificate."""
    import os

    from scram_broker import FakeScramBroker

    from contracts import kafka

    password = env_keys(generated / ".env")["KAFKA_COLLECTOR_PASSWORD"]
    tls = generated / "secrets" / "tls"
    broker = FakeScramBroker({"collector": password}, tls / "broker.pem", tls / "broker.key")
    try:
        e = env(services["collector"])
        e["SANDMETER_COLLECTOR_KAFKA_BOOTSTRAP"] = broker.bootstrap  # 127.0.0.1, as in compose
        e["SANDMETER_COLLECTOR_KAFKA_CA_FILE"] = str(generated / "secrets" / "kafka-ca.pem")
        with mock.patch.dict(os.environ, e, clear=True):
            s = load(CollectorSettings, os.environ)
        assert kafka.probe(s.kafka_kwargs(), timeout_s=5) is None
        assert "authenticated collector" in broker.events
    finally:
        broker.close()
