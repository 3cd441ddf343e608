"""Running Oyez: configuration, logs, metrics and the SQLite state file."""
