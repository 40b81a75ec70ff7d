"""Health incidents as the API serves them: one row per incident, with its latest evidence.

Newest first, in keyset pages: a cursor is the last incident's (opened ms, hex of its id).
"""

from __future__ import annotations

import json
from typing import Any

from billing.timeparse import format_ms
from contracts.clickhouse import tables
from contracts.names import INCIDENT_KINDS


def cursor_of(incident: dict[str, Any], opened_ms: int) -> str:
    return f"{opened_ms}-{incident['incident_id'].encode().hex().upper()}"


def _evidence(text: Any) -> dict[str, Any]:
    """Stored evidence is JSON written by the processor; anything else is shown, not trusted."""
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return {"unparsed": str(text)[:1000]}
    return doc if isinstance(doc, dict) else {"value": doc}


def incidents(
    ch: Any, state: str, limit: int, cursor: str | None, tenant: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of incidents (all known kinds; for a tenant only its sandboxes', never a host disk's,
    whatever the disk is called) and the cursor of the next page, if any."""
    where = "AND tenant = %(tenant)s AND sandbox_id != '' AND disk = '' " if tenant is not None else ""
    having = {"open": ["closes = 0"], "closed": ["closes > 0"], "all": []}[state]
    params: dict[str, Any] = {"tenant": tenant, "kinds": INCIDENT_KINDS}
    if cursor is not None:
        ms, _, hx = cursor.partition("-")
        having.append("(opened < %(c_ms)s OR (opened = %(c_ms)s AND hex(incident_id) < %(c_id)s))")
        params |= {"c_ms": int(ms), "c_id": hx.upper()}
    rows = ch.execute(
        "SELECT incident_id, kind, node, sandbox_id, tenant, disk, min(opened_ms) AS opened, "
        "countIf(event = 'close') AS closes, maxIf(ts_ms, event = 'close') AS closed, argMax(evidence, ts_ms) "
        f"FROM {tables(ch).health} FINAL WHERE kind IN %(kinds)s {where}"
        "GROUP BY incident_id, kind, node, sandbox_id, tenant, disk "
        + (f"HAVING {' AND '.join(having)} " if having else "")
        + f"ORDER BY opened DESC, incident_id DESC LIMIT {limit + 1}",
        params,
        settings={"use_numpy": False},
    )
    out = [
        {
            "incident_id": str(i), "kind": str(k), "node": str(nd), "sandbox_id": str(sb), "tenant": str(t),
            "disk": str(dk),
            "opened": format_ms(int(op)), "closed": format_ms(int(cl)) if int(closes) else None,
            "state": "closed" if int(closes) else "open", "evidence": _evidence(ev),
        }
        for i, k, nd, sb, t, dk, op, closes, cl, ev in rows[:limit]
    ]  # fmt: skip
    more = len(rows) > limit
    return out, (cursor_of(out[-1], int(rows[limit - 1][6])) if more else None)
