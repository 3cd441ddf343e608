"""Scheduled alerts: the model, its SQLite store, the scheduler, and its CLI and HTTP API."""
