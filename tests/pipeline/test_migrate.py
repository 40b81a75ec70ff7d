from __future__ import annotations

from typing import Any

import pytest

from pipeline.migrate import available, migrate, split_statements
from sandmeter import names as n


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
