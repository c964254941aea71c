"""Flows: trigger → condition → delay → action journeys, their engine, library and back-tests."""
