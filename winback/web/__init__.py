"""The HTTP surface: Segment tracking API, Shopify webhooks and the admin API (FastAPI)."""
