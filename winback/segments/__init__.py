"""Segments: a rule language over behaviour, orders, attributes, location and engagement,
compiled to one SQL query or evaluated in memory for one customer, with stored live membership."""
