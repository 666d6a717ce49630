"""Persistence: engine and sessions, models, repositories."""
