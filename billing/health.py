"""Health incidents as the API serves them: one row per incident, with its latest evidence."""

from __future__ import annotations

import json
from typing import Any, Final

from billing.errors import bad_request
from billing.timeparse import format_ms
from contracts.names import T_HEALTH

STATES: Final = ("open", "closed", "all")
MAX_INCIDENTS: Final = 1000


def incidents(ch: Any, state: str, tenant: str | None = None) -> list[dict[str, Any]]:
    """Incidents, newest first; for a tenant only its sandboxes' (host disks have no tenant)."""
    if state not in STATES:
        raise bad_request("bad_state", f"state is one of {', '.join(STATES)}")
    where = "WHERE tenant = %(tenant)s AND sandbox_id != ''" if tenant is not None else ""
    having = {"open": "HAVING closes = 0", "closed": "HAVING closes > 0", "all": ""}[state]
    rows = ch.execute(
        "SELECT incident_id, kind, node, sandbox_id, tenant, min(opened_ms) AS opened, "
        "countIf(event = 'close') AS closes, maxIf(ts_ms, event = 'close') AS closed, argMax(evidence, ts_ms) "
        f"FROM {T_HEALTH} FINAL {where} GROUP BY incident_id, kind, node, sandbox_id, tenant {having} "
        f"ORDER BY opened DESC LIMIT {MAX_INCIDENTS}",
        {"tenant": tenant},
        settings={"use_numpy": False},
    )
    return [
        {
            "incident_id": i,
            "kind": k,
            "node": nd,
            "sandbox_id": sb,
            "tenant": t,
            "opened": format_ms(int(op)),
            "closed": format_ms(int(cl)) if int(closes) else None,
            "state": "closed" if int(closes) else "open",
            "evidence": json.loads(ev or "{}"),
        }
        for i, k, nd, sb, t, op, closes, cl, ev in rows
    ]
