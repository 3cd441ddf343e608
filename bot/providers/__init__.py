"""Providers: the provider interface and registry (`base`), and the policy around every call.

`dispatch` (credit circuit, budgets, rate limiter, retries, spend), `ratelimit`, `credits` (the
SQLite ledger), `http` (what HTTP providers share) and `report` (the credits report).
"""
