"""Taking events in: the Segment tracking API format, Shopify webhooks, and the event store."""
