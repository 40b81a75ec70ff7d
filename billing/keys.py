"""API keys: `smk_<key id>_<secret>`, each for one tenant or for the operator role.

Only the SHA-256 of the secret is stored (the secret is 256 random bits, so a slow hash
adds nothing). The API keeps the table in memory for a few seconds, so a revocation takes
effect within `KEY_CACHE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from billing.errors import unauthenticated
from billing.params import TENANT_RE
from contracts.clickhouse import tables
from contracts.clock import wall_ms

OPERATOR: Final = "operator"
TENANT: Final = "tenant"
COLUMNS: Final = ("key_id", "secret_sha256", "role", "tenant", "created_ms", "revoked_ms")


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    tenant: str  # "" for the operator

    def may_read(self, tenant: str) -> bool:
        return self.role == OPERATOR or self.tenant == tenant


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class BadKey(ValueError):
    """A key that cannot be created; the message says what to change."""


INSERTED = "key_id, secret_sha256, role, tenant, created_ms, revoked_ms, version"


def create_key(ch: Any, role: str, tenant: str = "") -> tuple[str, str]:
    """Stores a new key; returns (key id, the full key, shown once)."""
    if role not in (OPERATOR, TENANT) or (role == TENANT) != bool(tenant):
        raise BadKey("a key is for one tenant (--tenant T), or for the operator role (--operator)")
    if role == TENANT and TENANT_RE.fullmatch(tenant) is None:
        raise BadKey(f"tenant {tenant!r}: a tenant id is 1-63 of [a-z0-9._-], starting alphanumeric")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = wall_ms()
    ch.execute(
        f"INSERT INTO {tables(ch).api_keys} ({INSERTED}) VALUES",
        [
            {
                "key_id": key_id,
                "secret_sha256": _sha(secret),
                "role": role,
                "tenant": tenant,
                "created_ms": now,
                "revoked_ms": 0,
                "version": now,
            }
        ],
        settings={"use_numpy": False},
    )
    return key_id, f"smk_{key_id}_{secret}"


def list_keys(ch: Any) -> list[dict[str, Any]]:
    rows = ch.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {tables(ch).api_keys} FINAL ORDER BY created_ms",
        settings={"use_numpy": False},
    )
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def revoke_key(ch: Any, key_id: str) -> bool:
    current = [k for k in list_keys(ch) if k["key_id"] == key_id]
    if not current:
        return False
    k = current[0]
    now = max(wall_ms(), int(k["created_ms"]) + 1)
    ch.execute(
        f"INSERT INTO {tables(ch).api_keys} ({INSERTED}) VALUES",
        [{**k, "revoked_ms": now, "version": now}],
        settings={"use_numpy": False},
    )
    return True


class KeyCache:
    def __init__(self, ch_factory: Any, ttl_s: float = 5.0) -> None:
        self.ch_factory, self.ttl_s = ch_factory, ttl_s
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded = -1e18
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded < self.ttl_s:
                return
            self._keys = {k["key_id"]: k for k in list_keys(self.ch_factory())}
            self._loaded = time.monotonic()

    def authenticate(self, key: str | None) -> Principal:
        """The key's principal; `key` is the credential of `Authorization: Bearer <key>` (the scheme
        word in any case, as RFC 7235 says), None when the header is missing or another scheme."""
        if not key:
            raise unauthenticated("send `Authorization: Bearer <api key>`")
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "smk":
            raise unauthenticated("malformed API key: expected smk_<id>_<secret>")
        self._refresh()
        k = self._keys.get(parts[1])
        if k is None or not hmac.compare_digest(k["secret_sha256"], _sha(parts[2])) or k["revoked_ms"]:
            raise unauthenticated("unknown or revoked API key")
        return Principal(k["key_id"], k["role"], k["tenant"])
