"""Each component's ClickHouse user may do what the component needs and nothing else, proven on
the real 18.16 server the tests start (sandmeter/stack/users.py, docs/deployment.md: Users).

Every case runs one statement as one user in a migrated database of the module's own: an
ALLOW case must succeed, a DENY case must fail with the server's own refusal code:
164 readonly, 291 database not allowed, 392 DDL not allowed, 192/193 login refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver.errors import ServerException
from support import private_db

from billing.keys import OPERATOR, create_key
from sandmeter.stack import Stack
from sandmeter.stack.users import ADMIN, API, BILLING, DASHBOARDS, SCALE, WRITER, Users, sha256_hex

pytestmark = pytest.mark.clickhouse

READONLY, NOT_ALLOWED, NO_DDL = 164, 291, 392
ALLOW = None
Q = "{d}"  # replaced by the module database's name in each statement

# (user, what, statement, None for ALLOW or the refusal code)
CASES: list[tuple[str, str, str, int | None]] = [
    # the processor: writes metering, raw and its own state; no DDL; nothing of billing
    (WRITER, "insert usage (rollup shape: INSERT SELECT)",
     "INSERT INTO {d}.usage_intervals (tenant, sandbox_id, end_ms, batch_id) SELECT 'w', 's', 1, 'b'", ALLOW),
    (WRITER, "rollup INSERT .. SELECT .. FINAL",
     "INSERT INTO {d}.usage_minute (tenant, sandbox_id, minute_ms, intervals) "
     "SELECT tenant, sandbox_id, 0, count() FROM {d}.usage_intervals FINAL GROUP BY tenant, sandbox_id", ALLOW),
    (WRITER, "tenant-minute rollup INSERT .. SELECT .. FINAL",
     "INSERT INTO {d}.usage_tenant_minute (tenant, minute_ms, cpu_used_us, intervals) "
     "SELECT tenant, minute_ms, sum(toDecimal128(cpu_used_us, 0)), sum(intervals) FROM {d}.usage_minute FINAL "
     "GROUP BY tenant, minute_ms", ALLOW),
    (WRITER, "insert raw samples", "INSERT INTO {d}_raw.raw_samples (series_id, ts_ms, value) SELECT 1, 1, 1", ALLOW),
    (WRITER, "insert a checkpoint",
     "INSERT INTO {d}_internal.processor_checkpoints (topic, partition, offset) SELECT 't', 0, 1", ALLOW),
    (WRITER, "read checkpoints", "SELECT count() FROM {d}_internal.processor_checkpoints", ALLOW),
    (WRITER, "list partitions (system.parts)", "SELECT count() FROM system.parts WHERE database = '{d}_raw'", ALLOW),
    (WRITER, "ALTER .. DROP PARTITION (retention is the admin's)",
     "ALTER TABLE {d}_raw.raw_samples DROP PARTITION 20261127", NO_DDL),
    (WRITER, "CREATE TABLE", "CREATE TABLE {d}.x (a UInt8) ENGINE = Memory", NO_DDL),
    (WRITER, "DROP TABLE", "DROP TABLE {d}.usage_minute", NO_DDL),
    (WRITER, "TRUNCATE", "TRUNCATE TABLE {d}.usage_minute", NO_DDL),
    (WRITER, "read API keys", "SELECT count() FROM {d}_billing.api_keys", NOT_ALLOWED),
    (WRITER, "forge an operator key",
     "INSERT INTO {d}_billing.api_keys (key_id, role) SELECT 'forged', 'operator'", NOT_ALLOWED),
    (WRITER, "Buffer table over api_keys (18.16's write bypass for DDL users)",
     "CREATE TABLE {d}.buf AS {d}_billing.api_keys ENGINE = Buffer({d}_billing, api_keys, 1, 1, 1, 1, 1, 1, 1)",
     NO_DDL),
    (WRITER, "materialized view TO api_keys (the other bypass)",
     "CREATE MATERIALIZED VIEW {d}.mv TO {d}_billing.api_keys AS SELECT 'k' AS key_id FROM {d}.usage_intervals",
     NO_DDL),
    # the API: reads usage, health and function load; nothing else, no writes
    (API, "read usage FINAL", "SELECT count() FROM {d}.usage_minute FINAL", ALLOW),
    (API, "read tenant minutes FINAL", "SELECT count() FROM {d}.usage_tenant_minute FINAL", ALLOW),
    (API, "forge tenant minutes",
     "INSERT INTO {d}.usage_tenant_minute (tenant, minute_ms, intervals) SELECT 'x', 1, 1", READONLY),
    (API, "read function load (/v1/scale)", "SELECT count() FROM {d}.function_load FINAL", ALLOW),
    (API, "read incidents", "SELECT count() FROM {d}.health_events FINAL", ALLOW),
    (API, "read raw samples", "SELECT count() FROM {d}_raw.raw_samples", NOT_ALLOWED),
    (API, "read late samples", "SELECT count() FROM {d}_raw.late_samples", NOT_ALLOWED),
    (API, "read checkpoints", "SELECT count() FROM {d}_internal.processor_checkpoints", NOT_ALLOWED),
    (API, "write checkpoints",
     "INSERT INTO {d}_internal.processor_checkpoints (topic, partition, offset) SELECT 't', 0, 1", READONLY),
    (API, "forge usage", "INSERT INTO {d}.usage_intervals (tenant, sandbox_id, end_ms) SELECT 'x', 's', 1",
     READONLY),
    (API, "write raw samples", "INSERT INTO {d}_raw.raw_samples (series_id, ts_ms, value) SELECT 1, 1, 1",
     READONLY),
    (API, "read API keys with its usage user", "SELECT count() FROM {d}_billing.api_keys", NOT_ALLOWED),
    (API, "table function remote()", "SELECT * FROM remote('127.0.0.1', system.one)", READONLY),
    # the API's billing user: keys and invoices only
    (BILLING, "read API keys", "SELECT count() FROM {d}_billing.api_keys FINAL", ALLOW),
    (BILLING, "append an invoice", "INSERT INTO {d}_billing.invoices (tenant, period) SELECT 'x', '2026-11'", ALLOW),
    (BILLING, "read usage", "SELECT count() FROM {d}.usage_minute", NOT_ALLOWED),
    (BILLING, "read raw samples", "SELECT count() FROM {d}_raw.raw_samples", NOT_ALLOWED),
    (BILLING, "forge usage", "INSERT INTO {d}.usage_intervals (tenant, sandbox_id, end_ms) SELECT 'x', 's', 1",
     NOT_ALLOWED),
    (BILLING, "delete keys (mutation)", "ALTER TABLE {d}_billing.api_keys DELETE WHERE 1", NO_DDL),
    # the scale publisher: function load only
    (SCALE, "read function load", "SELECT count() FROM {d}.function_load FINAL", ALLOW),
    (SCALE, "read raw samples", "SELECT count() FROM {d}_raw.raw_samples", NOT_ALLOWED),
    (SCALE, "read API keys", "SELECT count() FROM {d}_billing.api_keys", NOT_ALLOWED),
    (SCALE, "write function load",
     "INSERT INTO {d}.function_load (tenant, function, end_ms) SELECT 'x', 'f', 1", READONLY),
    # Grafana: usage, health and the raw host series; never keys, invoices or state; no writes
    (DASHBOARDS, "usage panel", "SELECT count() FROM {d}.usage_minute FINAL", ALLOW),
    (DASHBOARDS, "host panel: raw samples joined to their names",
     "SELECT count() FROM {d}_raw.raw_samples ALL INNER JOIN (SELECT DISTINCT series_id FROM {d}_raw.raw_series) "
     "AS s USING series_id", ALLOW),
    (DASHBOARDS, "read API keys", "SELECT count() FROM {d}_billing.api_keys", NOT_ALLOWED),
    (DASHBOARDS, "read invoices", "SELECT count() FROM {d}_billing.invoices", NOT_ALLOWED),
    (DASHBOARDS, "read checkpoints", "SELECT count() FROM {d}_internal.processor_checkpoints", NOT_ALLOWED),
    (DASHBOARDS, "tenant panel", "SELECT count() FROM {d}.usage_tenant_minute FINAL", ALLOW),
    (DASHBOARDS, "INSERT tenant minutes",
     "INSERT INTO {d}.usage_tenant_minute (tenant, minute_ms, intervals) SELECT 'x', 1, 1", READONLY),
    (DASHBOARDS, "INSERT", "INSERT INTO {d}.usage_minute (tenant, sandbox_id, minute_ms) SELECT 'x', 's', 1",
     READONLY),
    (DASHBOARDS, "ALTER .. DELETE", "ALTER TABLE {d}.usage_minute DELETE WHERE 1", READONLY),
    (DASHBOARDS, "DROP TABLE", "DROP TABLE {d}.usage_minute", READONLY),
    (DASHBOARDS, "table function remote()", "SELECT * FROM remote('127.0.0.1', system.one)", READONLY),
    (DASHBOARDS, "the billing tables are not even listed",
     "SELECT throwIf(count() != 0) FROM system.tables WHERE database = '{d}_billing'", ALLOW),
    # the admin: DDL, so retention and migrations
    (ADMIN, "retention drops a day", "ALTER TABLE {d}_raw.raw_samples DROP PARTITION 20261127", ALLOW),
]  # fmt: skip


@pytest.fixture(scope="module")
def users_db(stack: Stack) -> Iterator[str]:
    with private_db(stack) as (name, admin):
        create_key(admin, OPERATOR)  # a real key the others must not see
        yield name


@pytest.mark.parametrize(
    ("user", "what", "sql", "code"), CASES, ids=[f"{u.removeprefix('sandmeter_')}: {w}" for u, w, _, _ in CASES]
)
def test_each_user_may_do_only_what_its_component_needs(
    stack: Stack, users_db: str, user: str, what: str, sql: str, code: int | None
) -> None:
    ch = stack.ch(users_db, user)
    statement = sql.replace(Q, users_db)
    if code is ALLOW:
        ch.execute(statement)
        return
    with pytest.raises(ServerException) as e:
        ch.execute(statement)
    assert e.value.code == code, f"{user} {what}: {str(e.value).splitlines()[0]}"


def test_every_user_has_allow_and_deny_cases() -> None:
    for user in (WRITER, API, BILLING, SCALE, DASHBOARDS):
        assert {c is ALLOW for u, _, _, c in CASES if u == user} == {True, False}, user


@pytest.mark.parametrize(("user", "password", "code"), [("default", "", 192), (WRITER, "not-its-password", 193)])
def test_there_is_no_default_user_and_a_wrong_password_is_refused(
    stack: Stack, user: str, password: str, code: int
) -> None:
    from clickhouse_driver import Client

    with pytest.raises(ServerException) as e:
        Client(host="127.0.0.1", port=stack.settings.clickhouse_tcp_port, user=user, password=password).execute(
            "SELECT 1"
        )
    assert e.value.code == code


def test_a_component_user_cannot_use_a_database_nobody_allowed(stack: Stack) -> None:
    """The users are allowed the databases of configured names only (the stack's own and the
    tests' while they run), not whatever an admin creates."""
    admin = stack.ch("elsewhere", home="system")
    admin.execute("CREATE DATABASE IF NOT EXISTS elsewhere")
    admin.execute("CREATE TABLE IF NOT EXISTS elsewhere.t (a UInt8) ENGINE = Memory")
    try:
        with pytest.raises(ServerException) as e:
            stack.ch("elsewhere", DASHBOARDS, home="system").execute("SELECT count() FROM elsewhere.t")
        assert e.value.code == NOT_ALLOWED
    finally:
        admin.execute("DROP DATABASE elsewhere")


def test_the_users_files_hold_hashes_and_no_default_user(tmp_path: Path) -> None:
    users = Users(tmp_path)
    users.names.add("t_1")
    text = users.users_xml() + users.roles_xml()
    listed = [part.split("</users>")[0] for part in text.split("<users>")[1:]]
    assert len(listed) == 2 and not any("<default>" in users_ for users_ in listed)
    for role in (ADMIN, WRITER, API, BILLING, SCALE, DASHBOARDS):
        pw = users.password(role)
        assert pw not in text and sha256_hex(pw) in text
        assert users.password_file(role).stat().st_mode & 0o077 == 0  # the owner's only
    assert "<database>t_1_billing</database>" in text and "<database>sandmeter_raw</database>" in text
    assert users.password(WRITER) == Users(tmp_path).password(WRITER)  # made once per stack
