"""Versioned, idempotent ClickHouse migrations (`sandmeter migrate`).

Files `migrations/NNNN_name.sql` run in order; `sandmeter_migrations` records each applied
version, so running again applies nothing. Statements use IF NOT EXISTS, so a migration
interrupted half-way can be re-run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from contracts.clickhouse import tables
from contracts.names import T_FUNCTION_LOAD, T_HEALTH, T_USAGE, Tables, databases
from pipeline import shards
from pipeline.shards import Executes

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_CREATE = re.compile(r"^(CREATE TABLE IF NOT EXISTS )(\w+)(?=\s)")
# Key columns added by amending migrations before the first release: a table created before
# keeps its old sorting key, which collapses distinct rows (docs/architecture.md)
REQUIRED_KEY_COLUMNS = {T_USAGE: "batch_id", T_FUNCTION_LOAD: "batch_id", T_HEALTH: "disk"}


class SchemaError(RuntimeError):
    """A table exists with a sorting key this version cannot bill correctly from."""


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


def qualified(stmt: str, t: Tables) -> str:
    """A migration statement with its table in the database it belongs to (the files name
    tables bare; contracts.names says where each lives)."""
    return _CREATE.sub(lambda m: m[1] + t(m[2]), stmt.strip(), count=1)


def applied(client: Executes) -> set[int]:
    t = tables(client)
    for db in databases(t.database):
        client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.execute(
        f"CREATE TABLE IF NOT EXISTS {t.migrations} "
        "(version UInt32, name String, applied_ms UInt64) ENGINE = MergeTree ORDER BY version"
    )
    return {int(r[0]) for r in client.execute(f"SELECT version FROM {t.migrations}")}


def migrate(
    client: Executes, now_ms: int, cluster: str = "", connect: Callable[[str, int], Executes] | None = None
) -> list[Migration]:
    """Applies the migrations not yet recorded; returns those it applied.

    With a `cluster`, the cluster flavour (pipeline/shards.py) is applied to each host in turn
    through `connect(host, port)`, and each host records its own versions: a host added later
    gets everything, and a host that is down fails the command at once instead of leaving
    distributed DDL queued for it.
    """
    if not cluster:
        t = tables(client)
        ran = _apply(client, now_ms, lambda stmt: [qualified(stmt, t)])
        check_keys(client)
        return ran
    if connect is None:
        raise ValueError("a cluster migration needs a way to connect to each host")
    t = tables(client)
    done: dict[int, Migration] = {}

    def on_host(host: Executes) -> None:
        for mig in _apply(host, now_ms, lambda stmt: shards.cluster_statements(stmt, cluster, t)):
            done[mig.version] = mig

    shards.on_every_host(client, cluster, connect, on_host)
    check_keys(client, cluster, connect)
    return [done[v] for v in sorted(done)]


def _apply(client: Executes, now_ms: int, flavour: Callable[[str], list[str]]) -> list[Migration]:
    done = applied(client)
    ran = []
    for mig in available():
        if mig.version in done:
            continue
        log.info("applying migration %04d_%s (%d statements)", mig.version, mig.name, len(mig.statements))
        for stmt in mig.statements:
            for sql in flavour(stmt):
                client.execute(sql)
        # INSERT ... SELECT keeps this independent of the client's numpy/row insert mode
        client.execute(
            f"INSERT INTO {tables(client).migrations} (version, name, applied_ms) SELECT %(v)s, %(n)s, %(t)s",
            {"v": mig.version, "n": mig.name, "t": now_ms},
        )
        ran.append(mig)
    return ran


def check_keys(client: Executes, cluster: str = "", connect: Callable[[str, int], Executes] | None = None) -> None:
    """Raises SchemaError if a table was created with a sorting key from before its amendment;
    on a cluster, checks the local tables (a Distributed table has no sorting key) of each host."""
    if cluster:
        if connect is None:
            raise ValueError("a cluster check needs a way to connect to each host")
        shards.on_every_host(client, cluster, connect, lambda host: _check_keys(host, shards.local))
    else:
        _check_keys(client, lambda t: t)


def _check_keys(client: Executes, where: Callable[[str], str]) -> None:
    t = tables(client)
    names = {where(table): table for table in REQUIRED_KEY_COLUMNS}
    rows = client.execute(
        "SELECT name, sorting_key FROM system.tables WHERE database IN %(d)s AND name IN %(t)s",
        {"d": tuple({t.db(table) for table in REQUIRED_KEY_COLUMNS}), "t": tuple(names)},
    )
    for name, key in rows:
        column = REQUIRED_KEY_COLUMNS[names[str(name)]]
        if column not in [c.strip() for c in str(key).split(",")]:
            raise SchemaError(
                f"table {name} has the sorting key ({key}) of an unreleased schema, without {column}: it can "
                "merge distinct rows into one. Recreate this database (docs/architecture.md, Tables)."
            )
