"""Scheduled alerts: the model, its SQLite store, the scheduler, and its CLI and HTTP API."""

__all__ = ["PLACEHOLDERS"]

#: What a message may say about its fire time, with an example value. Here, not in
#: :mod:`bot.schedules.model`, so that ``oyez --help`` can list them without importing pydantic.
PLACEHOLDERS = {
    "time": "19:00 (24-hour clock)",
    "date": "March 3, 2026",
    "weekday": "Tuesday",
}
