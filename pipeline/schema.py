"""Versioned, idempotent ClickHouse migrations (`sandmeter migrate`).

Files `migrations/NNNN_name.sql` run in order; `sandmeter_migrations` records each applied
version, so running again applies nothing. Statements use IF NOT EXISTS, so a migration
interrupted half-way can be re-run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from contracts.names import T_FUNCTION_LOAD, T_MIGRATIONS, T_USAGE

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Key columns added by amending migrations before the first release: a table created before
# keeps its old sorting key, which collapses distinct rows (docs/architecture.md)
REQUIRED_KEY_COLUMNS = {T_USAGE: "batch_id", T_FUNCTION_LOAD: "batch_id"}


class SchemaError(RuntimeError):
    """A table exists with a sorting key this version cannot bill correctly from."""


class Executes(Protocol):
    def execute(self, sql: str, params: Any = None, /) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> tuple[str, ...]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())


def available() -> list[Migration]:
    out = []
    for f in resources.files("pipeline.migrations").iterdir():
        m = _NAME.match(f.name)
        if m:
            out.append(Migration(int(m[1]), m[2], split_statements(f.read_text())))
    return sorted(out, key=lambda mig: mig.version)


def applied(client: Executes) -> set[int]:
    client.execute(
        f"CREATE TABLE IF NOT EXISTS {T_MIGRATIONS} "
        "(version UInt32, name String, applied_ms UInt64) ENGINE = MergeTree ORDER BY version"
    )
    return {int(r[0]) for r in client.execute(f"SELECT version FROM {T_MIGRATIONS}")}


def migrate(client: Executes, now_ms: int) -> list[Migration]:
    """Applies the migrations not yet recorded; returns those it applied."""
    done = applied(client)
    ran = []
    for mig in available():
        if mig.version in done:
            continue
        log.info("applying migration %04d_%s (%d statements)", mig.version, mig.name, len(mig.statements))
        for stmt in mig.statements:
            client.execute(stmt)
        # INSERT ... SELECT keeps this independent of the client's numpy/row insert mode
        client.execute(
            f"INSERT INTO {T_MIGRATIONS} (version, name, applied_ms) SELECT %(v)s, %(n)s, %(t)s",
            {"v": mig.version, "n": mig.name, "t": now_ms},
        )
        ran.append(mig)
    check_keys(client)
    return ran


def check_keys(client: Executes) -> None:
    """Raises SchemaError if a table was created with a sorting key from before its amendment."""
    rows = client.execute(
        "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() AND name IN %(t)s",
        {"t": tuple(REQUIRED_KEY_COLUMNS)},
    )
    for name, key in rows:
        column = REQUIRED_KEY_COLUMNS[str(name)]
        if column not in [c.strip() for c in str(key).split(",")]:
            raise SchemaError(
                f"table {name} has the sorting key ({key}) of an unreleased schema, without {column}: it can "
                "merge distinct usage rows into one. Recreate this database (docs/architecture.md, Tables)."
            )
