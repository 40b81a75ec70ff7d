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

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from contracts.clickhouse import client

# case-insensitive: `debug` works as well as `DEBUG`
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(lambda v: str(v).upper())]


class Part(BaseSettings):
    """The base of every part and settings class: frozen, unknown variables ignored."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class KafkaPart(Part):
    kafka_bootstrap: str = "127.0.0.1:19092"


class ClickHousePart(Part):
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = Field(19000, ge=1, le=65535)
    clickhouse_database: str = "default"

    def clickhouse(self) -> Any:
        """A new connection (clickhouse-driver's Client; one per thread)."""
        return client(self.clickhouse_host, self.clickhouse_port, self.clickhouse_database)


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
    return {Path: "path", bool: "true|false", int: "integer", float: "number", str: "text"}.get(t, str(t))


def load(cls: type[P], environ: Mapping[str, str]) -> P:
    """The settings of `cls` from the environment, or SettingsProblem naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = env_name(cls, field)
        raise SettingsProblem(f"{var}={environ.get(var, err.get('input'))!r}: {err['msg']}") from None
    except SettingsError as exc:  # a list or mapping setting whose value is not JSON
        m = re.search(r'field "(\w+)"', str(exc))
        var = env_name(cls, m[1]) if m else "?"
        raise SettingsProblem(f'{var}={environ.get(var)!r}: expected a JSON list, e.g. ["/run/vc/sbs"]') from None
