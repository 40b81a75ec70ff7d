"""The local stack's ClickHouse users: one per component, each with only the rights it needs.

ClickHouse 18.16 (the local server) separates reads only per database (`allow_databases`) and
writes only by `readonly` (0: may write, 1: SELECT only) and `allow_ddl`; so the tables live in
four databases by who reads them (contracts.names.Tables) and the users are:

| user | profile | databases |
|---|---|---|
| sandmeter_admin | DDL (migrate, retention, test fixtures) | all |
| sandmeter_writer | writes, no DDL (processor) | <db>, <db>_raw, <db>_internal |
| sandmeter_api | read only (API: usage, health, function load) | <db> |
| sandmeter_billing | writes, no DDL (API keys and invoices) | <db>_billing |
| sandmeter_scale | read only (scale publisher) | <db> |
| sandmeter_dashboards | read only (Grafana) | <db>, <db>_raw |

There is no `default` user: a client that names no user is refused. Only the admin may run
DDL: on 18.16 a user that may create a table may write into any database through a Buffer
table or a materialized view (docs/deployment.md, Users).

Passwords are made once per stack and kept in `<state dir>/clickhouse-users/<user>` (mode
0600); the server's users file holds their sha256. `users.xml` has the profiles and the admin;
`users.d/sandmeter-roles.xml` has the component users, allowed the databases of each
configured name in `names` (the stack's own `sandmeter`, plus those tests add and remove while
the server runs: `SYSTEM RELOAD CONFIG` applies a change at once).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape

from contracts.names import BILLING_DB, INTERNAL_DB, RAW_DB

ADMIN: Final = "sandmeter_admin"
WRITER: Final = "sandmeter_writer"
API: Final = "sandmeter_api"
BILLING: Final = "sandmeter_billing"
SCALE: Final = "sandmeter_scale"
DASHBOARDS: Final = "sandmeter_dashboards"
DEFAULT_NAME: Final = "sandmeter"  # the configured database every component defaults to
ROLES_FILE: Final = "sandmeter-roles.xml"


@dataclass(frozen=True)
class Role:
    user: str
    profile: str
    suffixes: tuple[str, ...]  # the databases it may use, as suffixes of a configured name


ROLES: Final = (
    Role(WRITER, "writer", ("", RAW_DB, INTERNAL_DB)),
    Role(API, "reader", ("",)),
    Role(BILLING, "writer", (BILLING_DB,)),
    Role(SCALE, "reader", ("",)),
    Role(DASHBOARDS, "dashboards", ("", RAW_DB)),
)
NETWORKS: Final = "<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"
# `default` is the server's own profile (config.xml's default_profile), given to no user
PROFILES: Final = """<profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <admin><max_memory_usage>4000000000</max_memory_usage><readonly>0</readonly><allow_ddl>1</allow_ddl></admin>
    <writer><max_memory_usage>4000000000</max_memory_usage><readonly>0</readonly><allow_ddl>0</allow_ddl></writer>
    <reader><max_memory_usage>4000000000</max_memory_usage><readonly>1</readonly></reader>
    <dashboards><max_memory_usage>4000000000</max_memory_usage><readonly>1</readonly>
      <max_execution_time>60</max_execution_time></dashboards>
  </profiles>"""
QUOTAS: Final = """<quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>"""


def sha256_hex(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class Users:
    """The passwords of one stack (made on first use) and the users files they go into."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "clickhouse-users"
        self.names: set[str] = {DEFAULT_NAME}

    def password_file(self, user: str) -> Path:
        path = self.dir / user
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def _user(self, user: str, profile: str, databases: Iterable[str] = ()) -> str:
        allowed = "".join(f"<database>{escape(d)}</database>" for d in sorted(databases))
        return (
            f"<{user}><password_sha256_hex>{sha256_hex(self.password(user))}</password_sha256_hex>{NETWORKS}"
            f"<profile>{profile}</profile><quota>default</quota>"
            + (f"<allow_databases>{allowed}</allow_databases>" if allowed else "")
            + f"</{user}>"
        )

    def users_xml(self) -> str:
        """The server's users file: the profiles and the admin (allowed every database)."""
        return (
            '<?xml version="1.0"?>\n<!-- generated by sandmeter stack: no default user -->\n<yandex>\n  '
            f"{PROFILES}\n  <users>{self._user(ADMIN, 'admin')}</users>\n  {QUOTAS}\n</yandex>\n"
        )

    def roles_xml(self) -> str:
        """users.d: the component users, each allowed its databases of every name in `names`."""
        users = "".join(
            self._user(r.user, r.profile, (name + suffix for name in self.names for suffix in r.suffixes))
            for r in ROLES
        )
        return f'<?xml version="1.0"?>\n<yandex><users>{users}</users></yandex>\n'

    def write(self, clickhouse_root: Path) -> Path:
        """Writes users.xml and users.d/ROLES_FILE under a server's root; returns users.xml."""
        (clickhouse_root / "users.d").mkdir(parents=True, exist_ok=True)
        users = clickhouse_root / "users.xml"
        users.write_text(self.users_xml())
        self.write_roles(clickhouse_root)
        return users

    def write_roles(self, clickhouse_root: Path) -> None:
        tmp = clickhouse_root / "users.d" / f".{ROLES_FILE}.tmp"
        tmp.write_text(self.roles_xml())
        tmp.replace(clickhouse_root / "users.d" / ROLES_FILE)  # the server never reads half a file

    def client(self, port: int, database: str, user: str = ADMIN, home: str = "", **kw: Any) -> Any:
        """A connection to the server on 127.0.0.1:`port` as `user`, for the configured
        `database`; the billing user starts in the billing database (the only one it may use)."""
        from contracts.clickhouse import client

        home = home or (database + BILLING_DB if user == BILLING else "")
        return client("127.0.0.1", port, database, user, self.password(user), home=home, **kw)

    def settings(self, user: str, prefix: str = "") -> dict[str, Any]:
        """Settings fields that make a component connect as `user` (`prefix`: e.g. `billing_`)."""
        return {f"{prefix}clickhouse_user": user, f"{prefix}clickhouse_password_file": self.password_file(user)}

    def env(self, service: str, user: str, prefix: str = "") -> dict[str, str]:
        """The same as SANDMETER_<SERVICE>_* variables, for a component run as a process."""
        return {f"SANDMETER_{service}_{k.upper()}": str(v) for k, v in self.settings(user, prefix).items()}

    def allow(self, name: str, servers: Iterable[tuple[Path, int]]) -> None:
        """Lets the component users use the databases of `name` on these (root, TCP port) servers."""
        self.names.add(name)
        self._reload(servers)

    def disallow(self, name: str, servers: Iterable[tuple[Path, int]]) -> None:
        self.names.discard(name)
        self._reload(servers)

    def _reload(self, servers: Iterable[tuple[Path, int]]) -> None:
        for root, port in servers:
            self.write_roles(root)
            self.client(port, "system", home="system").execute("SYSTEM RELOAD CONFIG")


# which user each service's settings name (`sandmeter stack up` prints them as variables)
SERVICE_USERS: Final = (
    ("MIGRATE", ADMIN, ""), ("RETENTION", ADMIN, ""), ("PROCESSOR", WRITER, ""), ("API", API, ""),
    ("API", BILLING, "billing_"), ("SCALE", SCALE, ""),
)  # fmt: skip


def exports(users: Users) -> list[str]:
    """`export` lines wiring every service to its user and password file."""
    return [f"export {k}={v}" for svc, user, prefix in SERVICE_USERS for k, v in users.env(svc, user, prefix).items()]
