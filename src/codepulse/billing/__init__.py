"""Billing: plans, quotas, subscriptions (codepulse.billing.service)."""
