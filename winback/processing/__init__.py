"""Applying the event stream to profiles and commerce state, per customer and in order."""
