"""Messaging: turns the flows' outbox rows into real messages through real providers, lawfully
(consent, suppressions, quiet hours, frequency caps) and at the right pace, and records everything
that happens to them afterwards (docs/messaging.md)."""
