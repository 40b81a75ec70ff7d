"""Price plans: versioned, effective-dated TOML files, validated at start-up.

One file per plan version (`plans/*.toml`) and one `assignments.toml` (tenant -> plan id,
plus the default). A file with an error is rejected with its path, line and field. All
prices and quantities are Decimals from strings; a float in a plan file is an error.

    id = "standard"
    version = 2
    effective_from = "2026-01-01T00:00:00Z"
    currency = "USD"
    minimum_commitment = "25.00"      # optional, per invoice

    [[lines]]
    metric = "vcpu_alloc_ms"
    model = "graduated"               # per_unit | graduated | volume
    free = "3600000"                  # optional allowance, taken before the tiers
    tiers = [ { up_to = "1000000000", price = "0.000000020" }, { price = "0.000000015" } ]
"""

from __future__ import annotations

import re
import tomllib
from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from billing.params import TENANT_RE
from billing.timeparse import parse_ms
from contracts.quantities import PLAN_METRICS as QUANTITY_PLAN_METRICS

# metric -> (unit shown on invoices, description)
PLAN_METRICS: Final[dict[str, tuple[str, str]]] = {m.name: (m.unit, m.description) for m in QUANTITY_PLAN_METRICS}
MODELS: Final = ("per_unit", "graduated", "volume")
MINOR_UNITS: Final = {"USD": 2, "EUR": 2, "GBP": 2, "CNY": 2, "JPY": 0}
PLAN_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # matched whole (fullmatch)


class PlanError(ValueError):
    def __init__(self, path: Path, line: int | None, field: str, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field}: {message}")
        self.path, self.line, self.field = path, line, field


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: no upper bound
    price: Decimal


@dataclass(frozen=True)
class PlanLine:
    metric: str
    model: str
    free: Decimal
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Plan:
    id: str
    version: int
    effective_from_ms: int
    currency: str
    minimum_commitment: Decimal
    lines: tuple[PlanLine, ...]
    source: str

    @property
    def minor_unit(self) -> Decimal:
        return Decimal(1).scaleb(-MINOR_UNITS[self.currency])


class _Locator:
    """Finds the line of a field in a TOML file (tomllib gives values, not positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line_of(self, key: str, lines_index: int | None = None, tier: int | None = None) -> int | None:
        start = 0
        if lines_index is not None:  # the n-th [[lines]] table
            heads = [i for i, ln in enumerate(self.lines) if ln.strip() == "[[lines]]"]
            start = heads[lines_index] if lines_index < len(heads) else 0
        if tier is not None:  # the n-th inline table of that line's `tiers`
            at = self._find("tiers", start)
            seen = -1
            for i in range(at - 1 if at else start, len(self.lines)):
                seen += self.lines[i].count("{")
                if seen >= tier:
                    return i + 1
        found = self._find(key, start)
        return found or (start + 1 if lines_index is not None else None)

    def _find(self, key: str, start: int) -> int | None:
        for i in range(start, len(self.lines)):
            if re.match(rf'^\s*"?{re.escape(key)}"?\s*=', self.lines[i]):
                return i + 1
        return None


def _dec(value: Any, err: Any, field: str, nonneg: bool = True) -> Decimal:
    if not isinstance(value, str):
        raise err(field, f"must be a quoted decimal string, got {type(value).__name__} {value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise err(field, f"{value!r} is not a decimal number") from None
    if not d.is_finite() or (nonneg and d < 0):
        raise err(field, f"{value!r} must be a finite number >= 0")
    return d


def load_plan(path: Path) -> Plan:
    text = path.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise PlanError(path, int(m[1]) if m else None, "syntax", str(exc)) from None
    loc = _Locator(text)

    def err_at(ix: int | None) -> Any:
        def make(field: str, message: str) -> PlanError:
            m = re.search(r"tiers\[(\d+)\]", field)
            key = field.rsplit(".", 1)[-1].split("[")[0]
            return PlanError(path, loc.line_of(key, ix, int(m[1]) if m else None), field, message)

        return make

    top = err_at(None)
    for key in ("id", "version", "effective_from", "currency", "lines"):
        if key not in doc:
            raise top(key, "missing")
    unknown = set(doc) - {"id", "version", "effective_from", "currency", "minimum_commitment", "lines"}
    if unknown:
        raise top(sorted(unknown)[0], "unknown field")
    if not isinstance(doc["id"], str) or PLAN_ID_RE.fullmatch(doc["id"]) is None:
        raise top("id", "1-63 of [a-z0-9_-], starting alphanumeric")
    if not isinstance(doc["version"], int) or doc["version"] < 1:
        raise top("version", "a positive integer")
    if doc["currency"] not in MINOR_UNITS:
        raise top("currency", f"one of {', '.join(MINOR_UNITS)}")
    try:
        eff = parse_ms(str(doc["effective_from"]))
    except ValueError as exc:
        raise top("effective_from", str(exc)) from None
    minimum = _dec(doc.get("minimum_commitment", "0"), top, "minimum_commitment")
    if not isinstance(doc["lines"], list) or not doc["lines"]:
        raise top("lines", "at least one [[lines]] table")
    lines: list[PlanLine] = []
    for i, raw in enumerate(doc["lines"]):
        e = err_at(i)
        p = f"lines[{i}]"
        unknown = set(raw) - {"metric", "model", "free", "tiers", "price"}
        if unknown:
            raise e(f"{p}.{sorted(unknown)[0]}", "unknown field")
        if raw.get("metric") not in PLAN_METRICS:
            raise e(f"{p}.metric", f"one of {', '.join(PLAN_METRICS)}, got {raw.get('metric')!r}")
        if raw["metric"] in (ln.metric for ln in lines):
            raise e(f"{p}.metric", f"{raw['metric']} priced twice")
        model = raw.get("model", "per_unit")
        if model not in MODELS:
            raise e(f"{p}.model", f"one of {', '.join(MODELS)}, got {model!r}")
        free = _dec(raw.get("free", "0"), e, f"{p}.free")
        if model == "per_unit":
            if "tiers" in raw or "price" not in raw:
                raise e(f"{p}.price", "per_unit takes one `price` and no tiers")
            tiers: tuple[Tier, ...] = (Tier(None, _dec(raw["price"], e, f"{p}.price")),)
        else:
            if "price" in raw or not isinstance(raw.get("tiers"), list) or not raw["tiers"]:
                raise e(f"{p}.tiers", f"{model} takes a non-empty `tiers` list and no `price`")
            out = []
            last = Decimal(0)
            for j, t in enumerate(raw["tiers"]):
                tp = f"{p}.tiers[{j}]"
                final = j == len(raw["tiers"]) - 1
                if set(t) - {"up_to", "price"} or "price" not in t:
                    raise e(f"{tp}", 'a tier is { up_to = "...", price = "..." }')
                up = None if "up_to" not in t else _dec(t["up_to"], e, f"{tp}.up_to")
                if (up is None) != final:
                    raise e(f"{tp}.up_to", "every tier but the last has an `up_to`; the last has none")
                if up is not None and up <= last:
                    raise e(f"{tp}.up_to", f"must grow: {up} after {last}")
                last = up if up is not None else last
                out.append(Tier(up, _dec(t["price"], e, f"{tp}.price")))
            tiers = tuple(out)
        lines.append(PlanLine(raw["metric"], model, free, tiers))
    return Plan(doc["id"], doc["version"], eff, doc["currency"], minimum, tuple(lines), str(path))


@dataclass(frozen=True)
class PlanBook:
    """Every plan version, and which plan each tenant is on."""

    versions: dict[str, tuple[Plan, ...]]  # id -> versions by effective_from
    assignments: dict[str, str]
    default: str
    # explicitly assigned tenants: when their assignment starts (default: their plan's first version)
    assigned_from: dict[str, int] = field(default_factory=dict)

    def plan_for(self, tenant: str, at_ms: int) -> Plan:
        """The tenant's plan version in effect at `at_ms` (the start of a billing range)."""
        versions = self.versions[self.assignments.get(tenant, self.default)]
        ix = bisect_right([v.effective_from_ms for v in versions], at_ms) - 1
        return versions[max(ix, 0)]  # before the first version: the first one

    def starts_ms(self, tenant: str) -> int:
        """When the tenant's plan starts: no invoice is for a month that ends before it."""
        first = self.versions[self.assignments.get(tenant, self.default)][0].effective_from_ms
        return max(first, self.assigned_from.get(tenant, first))

    def is_assigned(self, tenant: str) -> bool:
        """Named in assignments.toml: invoiced every month from its start, usage or not."""
        return tenant in self.assignments


def _assignment(
    af: Path, loc: _Locator, tenant: str, value: Any, plans: dict[str, list[Plan]]
) -> tuple[str, int | None]:
    """`"t" = "plan"` or `"t" = { plan = "plan", from = "2026-03-01T00:00:00Z" }`."""
    where = f"tenants.{tenant}"
    if not isinstance(tenant, str) or TENANT_RE.fullmatch(tenant) is None:
        raise PlanError(af, loc.line_of(tenant), where, "a tenant id is 1-63 of [a-z0-9._-], starting alphanumeric")
    if isinstance(value, dict):
        if set(value) - {"plan", "from"} or "plan" not in value:
            raise PlanError(af, loc.line_of(tenant), where, 'a plan id, or { plan = "...", from = "..." }')
        pid, since = value["plan"], value.get("from")
    else:
        pid, since = value, None
    if pid not in plans:
        raise PlanError(af, loc.line_of(tenant), where, f"no plan {pid!r}")
    if since is None:
        return str(pid), None
    try:
        return str(pid), parse_ms(str(since))
    except ValueError as exc:
        raise PlanError(af, loc.line_of(tenant), f"{where}.from", str(exc)) from None


def load_book(directory: Path) -> PlanBook:
    """Loads `directory/*.toml` plans and `directory/assignments.toml`; raises PlanError."""
    plans: dict[str, list[Plan]] = {}
    for f in sorted(directory.glob("*.toml")):
        if f.name == "assignments.toml":
            continue
        p = load_plan(f)
        if any(v.version == p.version for v in plans.get(p.id, [])):
            raise PlanError(f, _Locator(f.read_text()).line_of("version"), "version", f"{p.id} v{p.version} twice")
        plans.setdefault(p.id, []).append(p)
    af = directory / "assignments.toml"
    if not af.exists():
        raise PlanError(af, None, "file", "missing: it names the default plan and each tenant's plan")
    try:
        doc = tomllib.loads(af.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(af, None, "syntax", str(exc)) from None
    loc = _Locator(af.read_text())
    default = doc.get("default")
    if default not in plans:
        raise PlanError(af, loc.line_of("default"), "default", f"no plan {default!r}; plans: {', '.join(plans)}")
    tenants: dict[str, str] = {}
    since: dict[str, int] = {}
    for tenant, value in doc.get("tenants", {}).items():
        pid, start = _assignment(af, loc, tenant, value, plans)
        tenants[tenant] = pid
        if start is not None:
            since[tenant] = start
    versions = {k: tuple(sorted(v, key=lambda p: p.effective_from_ms)) for k, v in plans.items()}
    for vs in versions.values():
        cur = {p.currency for p in vs}
        if len(cur) > 1:
            raise PlanError(Path(vs[-1].source), None, "currency", f"versions of {vs[0].id} differ in currency")
    return PlanBook(versions, tenants, str(default), since)
