"""Current ClickHouse (chdb: the server embedded in-process) behind clickhouse-driver's methods.

The project calls `execute(sql, params, settings=...)`, `execute("INSERT ... VALUES", rows)`
and `insert_dataframe(...)`. Parameters are substituted with clickhouse-driver's own escaping,
so chdb gets the very text the driver sends to ClickHouse 18.16. Inserted frames go through a
Parquet file, and results come back typed through Arrow.

chdb runs one embedded server per process: open one ChdbClient per test session.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd


class _UTC:
    """What clickhouse-driver's escaping reads from a connection: the server's time zone."""

    class server_info:
        @staticmethod
        def get_timezone() -> str:
            return "UTC"


class ChdbClient:
    def __init__(self, path: Path) -> None:
        from chdb.session import Session

        self.session = Session(str(path))
        self.tables: Any = None  # the test sets the contracts.names.Tables its database gives
        self.files = path / "inserts"
        self.files.mkdir(parents=True, exist_ok=True)
        self._n = itertools.count()

    def execute(
        self, query: str, params: Any = None, settings: Any = None, columnar: bool = False, **_: Any
    ) -> list[tuple[Any, ...]]:
        # settings: client-side ones (use_numpy) or cluster ones, meaningless in-process
        if isinstance(params, list | tuple) and query.strip().upper().endswith("VALUES"):
            rows = [r if isinstance(r, dict) else dict(zip(_columns(query), r, strict=True)) for r in params]
            self.insert_dataframe(query, pd.DataFrame(rows, columns=_columns(query)))
            return []
        if params is not None:
            from clickhouse_driver.util.escape import escape_params

            query = query % escape_params(params, _UTC)
        rows = self._run(query)
        if "WITH TOTALS" in query.upper():  # the driver appends the totals row to the data, as here
            rows += self._totals(query, rows)
        return list(zip(*rows, strict=True)) if columnar else rows

    def insert_dataframe(self, query: str, df: pd.DataFrame, settings: Any = None) -> int:
        if df.empty:
            return 0
        path = self.files / f"{next(self._n)}.parquet"
        df.to_parquet(path, index=False)
        cols = ", ".join(_columns(query))
        head = query.strip()[: query.upper().rindex("VALUES")].strip()
        self._run(f"{head} SELECT {cols} FROM file('{path}', Parquet)")
        path.unlink()
        return len(df)

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        res = self.session.query(sql, "ArrowTable")
        if res is None or not getattr(res, "num_columns", 0):
            return []
        return list(zip(*(c.to_pylist() for c in res.columns), strict=True))

    def _totals(self, query: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The totals row (Arrow output has none), typed like the data's columns."""
        out = json.loads(self.session.query(query, "JSONCompact").bytes(), parse_float=Decimal)
        if "totals" not in out:
            return []
        typed = []
        for i, v in enumerate(out["totals"]):
            like = rows[0][i] if rows else v
            typed.append(Decimal(str(v)) if isinstance(like, Decimal) else type(like)(v) if rows else v)
        return [tuple(typed)]

    def close(self) -> None:
        self.session.close()


def _columns(insert: str) -> list[str]:
    return [c.strip() for c in insert[insert.index("(") + 1 : insert.index(")")].split(",")]
