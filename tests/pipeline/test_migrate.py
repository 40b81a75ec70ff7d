from __future__ import annotations

from typing import Any

import pytest

from contracts import names as n
from contracts.clickhouse import tables
from contracts.names import DATABASE_SUFFIX, databases
from pipeline.schema import SchemaError, available, migrate, split_statements
from sandmeter.stack import Stack


def test_migrations_avoid_features_missing_on_18_16() -> None:
    banned = ("DateTime64", "TTL ", "LowCardinality", "CODEC(", "OVER (", "WITH FILL")
    for mig in available():
        for stmt in mig.statements:
            assert not any(b in stmt for b in banned), (mig.name, stmt[:60])
            assert "IF NOT EXISTS" in stmt


def test_split_statements_skips_comments() -> None:
    assert split_statements("-- a; b\nSELECT 1;\n\nSELECT 2;") == ("SELECT 1", "SELECT 2")


@pytest.mark.clickhouse
def test_migrate_is_idempotent(ch_migrated: Any) -> None:
    assert migrate(ch_migrated, 1) == []
    t = tables(ch_migrated)
    where = {str(d): set() for d in databases(t.database)}
    for d, name in ch_migrated.execute("SELECT database, name FROM system.tables WHERE database IN %(d)s",
                                       {"d": databases(t.database)}):  # fmt: skip
        where[str(d)].add(str(name))
    assert {t.db(name) for name in DATABASE_SUFFIX} == set(where)  # every table in its database
    assert all(name in where[t.db(name)] for name in DATABASE_SUFFIX)
    versions = [r[0] for r in ch_migrated.execute(f"SELECT version FROM {t.migrations}")]
    assert sorted(versions) == [m.version for m in available()]


@pytest.mark.clickhouse
def test_a_usage_table_with_the_old_sorting_key_is_refused(stack: Stack) -> None:
    from support import private_db

    with private_db(stack) as (_, ch):
        usage = ch.execute(f"SHOW CREATE TABLE {n.T_USAGE}")[0][0]
        ch.execute(f"DROP TABLE {n.T_USAGE}")
        ch.execute(str(usage).replace(", batch_id)", ")"))  # as created before the key was amended
        with pytest.raises(SchemaError, match=r"usage_intervals .* without batch_id"):
            migrate(ch, 2)
        ch.execute(f"DROP TABLE {n.T_USAGE}")
        ch.execute(str(usage))
        assert migrate(ch, 3) == []  # the table as the migration makes it passes


@pytest.mark.clickhouse
def test_a_health_table_without_the_disk_in_its_key_is_refused(stack: Stack) -> None:
    """Before 2026-11-30 two disks of a node stalling in one ms shared a key (docs/architecture.md)."""
    from support import private_db

    with private_db(stack) as (_, ch):
        health = str(ch.execute(f"SHOW CREATE TABLE {n.T_HEALTH}")[0][0])
        ch.execute(f"DROP TABLE {n.T_HEALTH}")
        ch.execute(health.replace("sandbox_id, disk, opened_ms", "sandbox_id, opened_ms"))
        with pytest.raises(SchemaError, match=r"health_events .* without disk"):
            migrate(ch, 2)
