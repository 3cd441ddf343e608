"""Oyez's HTTP server: media URLs, the HTTP API, health and metrics."""
