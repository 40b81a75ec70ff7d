"""`sandmeter api` settings (SANDMETER_API_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from contracts.clickhouse import client
from contracts.names import BILLING_DB
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
    # the user for the billing tables (API keys, invoices; docs/deployment.md, Users): on
    # ClickHouse 18.16 one user cannot read usage and write only keys and invoices, so there it
    # is a second user; empty: the main user (current ClickHouse, where grants do both)
    billing_clickhouse_user: str = ""
    billing_clickhouse_password: SecretStr = SecretStr("")
    billing_clickhouse_password_file: FilePath | None = None

    @model_validator(mode="after")
    def _billing_password_is_readable(self) -> ApiSettings:
        self._billing_password()
        return self

    def _billing_password(self) -> str:
        if not self.billing_clickhouse_user:
            return self._clickhouse_password()
        return self._secret("billing_clickhouse_password", self.billing_clickhouse_password,
                            self.billing_clickhouse_password_file)  # fmt: skip

    def billing_clickhouse(self) -> Any:
        """A new connection for the billing tables, as the billing user (starting in the billing
        database, the only one that user may use on 18.16) or as the main user."""
        if not self.billing_clickhouse_user:
            return self.clickhouse()
        return client(
            self.clickhouse_host, self.clickhouse_port, self.clickhouse_database, self.billing_clickhouse_user,
            self._billing_password(), cluster=self.clickhouse_cluster, alt_hosts=self.clickhouse_alt_hosts,
            home=self.clickhouse_database + BILLING_DB,
        )  # fmt: skip
