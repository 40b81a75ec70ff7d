"""`sandmeter api` settings (SANDMETER_API_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import ClickHousePart, LogPart


class ApiSettings(ClickHousePart, LogPart):
    """The billing API; it serves its own /metrics on its HTTP port."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_API_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # the most rows one page of usage may hold (`limit`); tenants and incidents page too
    max_rows: int = Field(100_000, gt=0)
    # the longest range one request may read: from the minute/hour rollups, and from the raw
    # intervals (bounds or granularity finer than a minute), which cost far more per day
    max_range_days: int = Field(366, gt=0)
    max_exact_range_days: int = Field(31, gt=0)
    # each query the API sends is stopped after this long (503, retry)
    query_timeout_s: float = Field(30.0, gt=0)
    # price plans: *.toml plan versions plus assignments.toml (docs/billing.md)
    plans_dir: Path = Path("plans")
    # a month's invoice stays a draft at least this long after the month ends; then
    # `sandmeter invoices finalize` (run on a schedule) freezes it
    invoice_grace_s: float = Field(3600.0, ge=0)
    # API keys are re-read from ClickHouse this often: a revocation takes effect within it
    key_cache_s: float = Field(5.0, ge=0)
    # /v1/scale answers 503 when the newest load data anywhere is older than this
    scale_stale_s: float = Field(15.0, gt=0)
