"""Settings building blocks: the parts every service's settings class is composed of.

Each deployable has one frozen settings class, read from its SANDMETER_<SERVICE>_* variables,
built once at the entry point (`load`) and passed down; nothing below the entry point reads
os.environ. The classes inherit these parts instead of copying their fields, so a Kafka or
ClickHouse option is defined once and every service that connects takes it the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BeforeValidator, Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from contracts import kafka
from contracts.clickhouse import client

# case-insensitive: `debug` works as well as `DEBUG`
_upper = BeforeValidator(lambda v: str(v).upper())
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _upper]
SecurityProtocol = Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], _upper]
SaslMechanism = Annotated[Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"], _upper]


class Part(BaseSettings):
    """The base of every part and settings class: frozen, unknown variables ignored, and no
    input echoed in a validation error's text (it may hold a password)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    def _var(self, field: str) -> str:
        return env_name(type(self), field)

    def _secret(self, field: str, value: SecretStr, path: Path | None) -> str:
        """A password from its variable, or from the file its *_FILE variable names (docker and
        Kubernetes secrets), read when a client is built, so a rotated file is picked up."""
        if value.get_secret_value() and path is not None:
            raise ValueError(f"{self._var(field)} and {self._var(field + '_file')} are both set; set one")
        if path is None:
            return value.get_secret_value()
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            var = self._var(f"{field}_file")
            raise SettingsProblem(f"{var}={str(path)!r}: cannot read it ({exc.strerror})") from None


class KafkaPart(Part):
    kafka_bootstrap: str = "127.0.0.1:19092"
    # PLAINTEXT only where nobody else reaches the broker (the local Tansu broker can do neither
    # TLS nor SASL: docs/deployment.md); production: SASL_SSL with SCRAM-SHA-512
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    kafka_password_file: FilePath | None = None
    # the CA that signed the brokers' certificates (SSL, SASL_SSL); the system's bundle for a
    # publicly signed broker
    kafka_ca_file: FilePath | None = None
    kafka_check_hostname: bool = True

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> KafkaPart:
        """Every combination that cannot work, or would quietly ignore a credential, is refused
        at start, naming the variables (kafka-python would accept it until it connects)."""
        v = self._var
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        sasl, tls, chosen = "SASL" in protocol, "SSL" in protocol, f"{v('kafka_security_protocol')}={protocol}"
        has_password = bool(self.kafka_password.get_secret_value()) or self.kafka_password_file is not None
        password_vars = f"{v('kafka_password')} (or {v('kafka_password_file')})"
        refused = [
            (sasl and not self.kafka_username, f"{v('kafka_username')} is empty; {chosen} needs the SASL user"),
            (sasl and not has_password, f"{password_vars} is empty; {chosen} needs the SASL password"),
            (not sasl and bool(self.kafka_username or has_password),
             f"{chosen} sends no credentials: set it to SASL_SSL, or unset {v('kafka_username')} and {password_vars}"),
            (sasl and not tls and mechanism == "PLAIN",
             f"{chosen} with {v('kafka_sasl_mechanism')}=PLAIN sends the password in clear: use SASL_SSL"),
            (tls and self.kafka_ca_file is None,
             f"{v('kafka_ca_file')} is empty; {chosen} needs the CA that signed the brokers' certificates"),
            (not tls and self.kafka_ca_file is not None,
             f"{chosen} does not use TLS, so {v('kafka_ca_file')} would be ignored: set it to SASL_SSL, or unset it"),
        ]  # fmt: skip
        for bad, message in refused:
            if bad:
                raise ValueError(message)
        self._kafka_password()  # a password file that cannot be read is an error at start
        return self

    def _kafka_password(self) -> str:
        return self._secret("kafka_password", self.kafka_password, self.kafka_password_file)

    def kafka_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments (bootstrap and security) for every producer, consumer
        and admin client a service builds."""
        sasl = "SASL" in self.kafka_security_protocol
        return kafka.client_kwargs(
            self.kafka_bootstrap, self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_username,
            self._kafka_password() if sasl else "", self.kafka_ca_file, self.kafka_check_hostname,
        )  # fmt: skip


class ClickHousePart(Part):
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = Field(19000, ge=1, le=65535)
    # the name the installation's four databases derive from: <name> (metering), <name>_raw,
    # <name>_internal, <name>_billing (contracts/names.py, Tables)
    clickhouse_database: str = Field("sandmeter", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # each service its own user with only the rights it needs (docs/deployment.md); `default`
    # with no password is the local stack's
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_password_file: FilePath | None = None
    # the cluster's name in remote_servers when the tables are sharded and replicated (the
    # cluster flavour of `sandmeter migrate`); empty: a single server
    clickhouse_cluster: str = Field("", pattern=r"^[A-Za-z0-9_]*$")
    # other servers of the cluster ("host:port,host:port") to connect to when the host is down
    clickhouse_alt_hosts: str = ""
    # replicas that must have an insert before it returns; 0: the first one (docs/architecture.md)
    clickhouse_insert_quorum: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _clickhouse_password_is_readable(self) -> ClickHousePart:
        self._clickhouse_password()
        return self

    def _clickhouse_password(self) -> str:
        return self._secret("clickhouse_password", self.clickhouse_password, self.clickhouse_password_file)

    def clickhouse(self, home: str = "") -> Any:
        """A new connection (clickhouse-driver's Client; one per thread), starting in `home`
        (default: the configured database; `system` before the migrations created it)."""
        return client(
            self.clickhouse_host, self.clickhouse_port, self.clickhouse_database,
            self.clickhouse_user, self._clickhouse_password(), cluster=self.clickhouse_cluster,
            alt_hosts=self.clickhouse_alt_hosts, insert_quorum=self.clickhouse_insert_quorum, home=home,
        )  # fmt: skip

    def clickhouse_on(self, host: str, port: int, home: str = "") -> Any:
        """A connection to one host of the cluster, same database and user (migrations run per host)."""
        return client(
            host, port, self.clickhouse_database, self.clickhouse_user, self._clickhouse_password(),
            cluster=self.clickhouse_cluster, home=home,
        )  # fmt: skip


class MetricsPart(Part):
    """Where the service's Prometheus `/metrics` listens (port 0: no listener)."""

    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(0, ge=0, le=65535)


class LogPart(Part):
    status_every_s: float = Field(30.0, gt=0)  # the one-line periodic status
    log_level: LogLevel = "INFO"


P = TypeVar("P", bound=Part)


class SettingsProblem(ValueError):
    """A variable with a value its setting cannot take; the message names both and what fits."""


def env_name(cls: type[Part], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def variables(cls: type[Part]) -> list[tuple[str, str, str]]:
    """(variable, default, what it takes) of every setting of `cls`: its own first, then its parts'."""
    own = [f for f in cls.__annotations__ if f in cls.model_fields]
    out = []
    for name in [*own, *(f for f in cls.model_fields if f not in own)]:
        f = cls.model_fields[name]
        default = f.get_default(call_default_factory=True)
        shown = json.dumps([str(x) for x in default]) if isinstance(default, tuple) else str(default)
        out.append((env_name(cls, name), "" if default is None else shown, _kind(f.annotation)))
    return out


def _kind(t: Any) -> str:
    """A setting's type as an operator reads it."""
    origin, args = get_origin(t), get_args(t)
    if origin is Annotated:
        return _kind(args[0])
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in args)
    if origin in (Union, UnionType):
        kinds = [_kind(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (", optional" if type(None) in args else "")
    if origin is tuple:
        return f"JSON list of {_kind(args[0])}s"
    named = {Path: "path", bool: "true|false", int: "integer", float: "number", str: "text", SecretStr: "secret text"}
    return named.get(t, str(t))


def load(cls: type[P], environ: Mapping[str, str]) -> P:
    """The settings of `cls` from the environment, or SettingsProblem naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across settings: its message names the variables
            raise SettingsProblem(str(err["msg"]).removeprefix("Value error, ")) from None
        field = str(err["loc"][0])
        var = env_name(cls, field)
        value = "***" if cls.model_fields[field].annotation is SecretStr else environ.get(var, err.get("input"))
        raise SettingsProblem(f"{var}={value!r}: {err['msg']}") from None
    except SettingsError as exc:  # a list or mapping setting whose value is not JSON
        m = re.search(r'field "(\w+)"', str(exc))
        var = env_name(cls, m[1]) if m else "?"
        raise SettingsProblem(f'{var}={environ.get(var)!r}: expected a JSON list, e.g. ["/run/vc/sbs"]') from None
