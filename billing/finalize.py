"""Finalizing invoices: the one place an invoice is written (`sandmeter invoices finalize`).

Run it on a schedule (every hour is plenty): each run finalizes every invoice whose month
ended at least the grace period ago and that is not final yet, oldest month first per
tenant, so a month's late usage is measured against the months finalized before it. A run
is idempotent: an invoice already final is left as it is, and a second run finds nothing to
do. If two runs race, both rows are stored and every reader takes the earlier
finalization (the table keeps it through merges too: `keep` = 2^63 - finalized_ms).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from billing.invoices import Invoices, Period, dumps, months_with_usage
from billing.params import TENANT_RE
from billing.plans import PlanError, load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms, parse_ms
from contracts.clickhouse import tables
from contracts.clock import wall_ms

KEEP_BASE: Final = 1 << 63


@dataclass
class Report:
    finalized: list[tuple[str, str]] = field(default_factory=list)  # (tenant, period)
    already_final: int = 0


def due(
    invoices: Invoices, ch: Any, now_ms: int, tenant: str | None = None, *, bill: Any = None
) -> dict[str, list[Period]]:
    """Tenant -> months due for finalization (grace over, not yet final), oldest first; `bill`:
    the connection for the billing tables (default `ch`)."""
    bill = bill or ch
    # every month before the one holding `now - grace` ended at least the grace period ago
    last_due = Period.of_ms(max(now_ms - invoices.grace_ms, 0)).prev()
    if last_due.year < 1970:
        return {}
    book = invoices.book
    months = months_with_usage(ch, tenant, last_due.end_ms)
    for t in book.assignments if tenant is None else ([tenant] if book.is_assigned(tenant) else []):
        p = Period.of_ms(book.starts_ms(t))
        while p <= last_due:
            months.setdefault(t, set()).add(p)
            p = p.next()
    rows = bill.execute(
        f"SELECT DISTINCT tenant, period FROM {tables(bill).invoices}"
        + (" WHERE tenant = %(t)s" if tenant is not None else ""),
        {"t": tenant},
        settings={"use_numpy": False},
    )
    final = {(str(t), str(p)) for t, p in rows}
    out = {}
    for t, ps in months.items():
        start = book.starts_ms(t)
        todo = sorted(p for p in ps if p.end_ms > start and (t, str(p)) not in final)
        if todo:
            out[t] = todo
    return out


def finalize_due(
    invoices: Invoices, ch: Any, now_ms: int, tenant: str | None = None,
    progress: Callable[[str, Period], None] | None = None, *, bill: Any = None,
) -> Report:  # fmt: skip
    """Finalizes every due invoice (of one tenant, or of all), reading usage through `ch` and
    the invoices through `bill` (default `ch`), which must be allowed to INSERT."""
    report = Report()
    bill = bill or ch
    for t, periods in sorted(due(invoices, ch, now_ms, tenant, bill=bill).items()):
        for p in periods:
            if invoices.stored(bill, t, [str(p)]):  # finalized meanwhile by a concurrent run
                report.already_final += 1
                continue
            data = dumps(invoices.build(ch, t, p, now_ms, final=True, bill=bill))
            bill.execute(
                f"INSERT INTO {tables(bill).invoices} (tenant, period, finalized_ms, keep, body, sha256) VALUES",
                [
                    {
                        "tenant": t,
                        "period": str(p),
                        "finalized_ms": now_ms,
                        "keep": KEEP_BASE - now_ms,
                        "body": data.decode(),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                ],
                settings={"use_numpy": False},
            )
            report.finalized.append((t, str(p)))
            if progress is not None:
                progress(t, p)
    return report


def finalize_job(
    settings: ApiSettings, ch: Any, tenant: str | None, now: str | None, out: TextIO | None = None, bill: Any = None
) -> int:
    """`sandmeter invoices finalize`: 0 done (maybe nothing to do), 1 the store failed, 2 bad input."""
    try:
        book = load_book(settings.plans_dir)
        now_ms = wall_ms() if now is None else parse_ms(now)
        if tenant is not None and TENANT_RE.fullmatch(tenant) is None:
            raise ValueError(f"--tenant {tenant!r}: 1-63 of [a-z0-9._-], starting alphanumeric")
    except (PlanError, ValueError) as exc:
        print(f"sandmeter invoices finalize: {exc}", file=sys.stderr)
        return 2
    invoices = Invoices(book, int(settings.invoice_grace_s * 1000))
    out = out or sys.stdout

    def done(t: str, p: Period) -> None:
        print(f"finalized {t} {p}", file=out, flush=True)

    try:
        report = finalize_due(invoices, ch, now_ms, tenant, done, bill=bill)
    except Exception as exc:  # the store away or refusing: say so in one line; the next run retries
        why = repr(exc)[:300]
        print(f"sandmeter invoices finalize: failed ({why}); the invoices finalized before it stay final, "
              "the next run does the rest", file=sys.stderr)  # fmt: skip
        return 1
    print(f"finalized {len(report.finalized)} invoice(s) as of {format_ms(now_ms)}; "
          f"{report.already_final} were finalized meanwhile by another run", file=out)  # fmt: skip
    return 0
