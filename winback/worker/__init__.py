"""The loops that claim background work: event processing, abandonment sweeps."""
