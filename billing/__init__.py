"""The billing API: usage, cost rated by versioned price plans, monthly invoices, API keys."""

from billing.app import create_app
from billing.keys import OPERATOR, TENANT, create_key, list_keys, revoke_key
from billing.plans import PlanBook, PlanError, load_book
from billing.settings import ApiSettings

__all__ = [
    "OPERATOR",
    "TENANT",
    "ApiSettings",
    "PlanBook",
    "PlanError",
    "create_app",
    "create_key",
    "list_keys",
    "load_book",
    "revoke_key",
]
