"""The store model: catalog, carts and checkouts, orders and refunds, abandonment."""
