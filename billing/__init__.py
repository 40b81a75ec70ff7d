"""The billing API: usage, cost rated by versioned price plans, monthly invoices, API keys."""

from billing.app import create_app
from billing.finalize import finalize_job
from billing.keys import OPERATOR, TENANT, BadKey, create_key, list_keys, revoke_key
from billing.plans import PlanBook, PlanError, load_book
from billing.settings import ApiSettings

__all__ = [
    "OPERATOR",
    "TENANT",
    "ApiSettings",
    "BadKey",
    "PlanBook",
    "PlanError",
    "create_app",
    "create_key",
    "finalize_job",
    "list_keys",
    "load_book",
    "revoke_key",
]
