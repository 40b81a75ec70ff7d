from __future__ import annotations

from typing import Any

import pytest

from contracts import names as n
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
    tables = {r[0] for r in ch_migrated.execute("SHOW TABLES")}
    assert {n.T_MIGRATIONS, n.T_SAMPLES, n.T_USAGE, n.T_LIFECYCLE, n.T_LATE} <= tables
    versions = [r[0] for r in ch_migrated.execute(f"SELECT version FROM {n.T_MIGRATIONS}")]
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
