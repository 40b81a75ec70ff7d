"""What Grafana does to a ClickHouse panel query before the data source sees it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


def render_sql(sql: str, from_s: int, to_s: int, interval_s: int, variables: dict[str, list[str]]) -> str:
    """Grafana's variable interpolation and the ClickHouse plugin's macros, as they expand."""

    def var(m: re.Match[str]) -> str:
        values = variables[m[1]]
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)

    sql = re.sub(r"\$\{(\w+):singlequote\}", var, sql)
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    return sql.replace("$__interval_s", str(interval_s))


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of a dashboard's JSON."""
    for panel in dashboard.get("panels", []):
        for t in panel.get("targets", []):
            yield panel, t
