"""Announcements: one core for Home Assistant events, the HTTP API and schedules."""
