"""`sandmeter api`: the billing API (SANDMETER_API_*), and `sandmeter api keys` to manage keys."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

from contracts.metrics import service_registry
from contracts.settings import Part
from sandmeter import __version__
from sandmeter.cli.common import (
    SETTINGS_ERROR,
    CliError,
    Subparsers,
    apply_log_level,
    require_clickhouse,
    service,
    settings,
    stop_on_signals,
)


def _settings_class() -> type[Part]:
    from billing import ApiSettings

    return ApiSettings


def add(sub: Subparsers) -> None:
    api = service(sub, "api", "run the billing API (SANDMETER_API_*), or manage its keys", run, _settings_class)
    keys = (
        api.add_subparsers(dest="keys_cmd")
        .add_parser("keys", help="API keys")
        .add_subparsers(dest="keys_cmd", required=True)
    )
    kc = keys.add_parser("create", help="a key for one tenant (--tenant) or the operator (--operator)")
    kc.add_argument("--tenant", default="")
    kc.add_argument("--operator", action="store_true")
    keys.add_parser("revoke", help="revoke a key by its id").add_argument("key_id")
    keys.add_parser("list", help="key ids, roles, tenants, state (never the keys)")


def run(a: argparse.Namespace) -> int:
    # first: a SIGTERM during start-up ends it cleanly; uvicorn, stopping on its own handlers,
    # re-raises the signal into these at the end, so a stopped API exits 0 like every service
    stop = stop_on_signals()
    import uvicorn

    from billing import ApiSettings, PlanError, create_app

    s = settings(ApiSettings)
    apply_log_level(s, a.verbose)
    if getattr(a, "keys_cmd", None):
        require_clickhouse(s)
        return _keys(a, s.billing_clickhouse())
    try:
        app = create_app(
            s, s.clickhouse, registry=service_registry("api", __version__), billing_factory=s.billing_clickhouse
        )
    except PlanError as exc:
        raise CliError(SETTINGS_ERROR, f"bad price plan: {exc}") from None
    threading.Thread(target=_status, args=(app, s.status_every_s), daemon=True).start()
    if not stop.is_set():
        uvicorn.run(app, host=s.host, port=s.port, log_level=s.log_level.lower())
    return 0


def _status(app: Any, every_s: float) -> None:
    log = logging.getLogger("billing.app")
    while True:
        time.sleep(every_s)
        log.info("api: requests=%d errors=%d", app.state.requests, app.state.errors)


def _keys(a: argparse.Namespace, ch: Any) -> int:
    from billing import OPERATOR, TENANT, BadKey, create_key, list_keys, revoke_key

    if a.keys_cmd == "create":
        if bool(a.tenant) == a.operator:
            raise CliError(SETTINGS_ERROR, "give exactly one of --tenant T or --operator")
        try:
            key_id, key = create_key(ch, OPERATOR if a.operator else TENANT, a.tenant or "")
        except BadKey as exc:
            raise CliError(SETTINGS_ERROR, str(exc)) from None
        print(f"key id {key_id}; the key (shown once): {key}")
        return 0
    if a.keys_cmd == "revoke":
        if not revoke_key(ch, a.key_id):
            print(f"no key {a.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {a.key_id}")
        return 0
    for k in list_keys(ch):
        state = "revoked" if k["revoked_ms"] else "active"
        print(f"{k['key_id']}  {k['role']:<8}  {k['tenant'] or '-':<24}  {state}")
    return 0
