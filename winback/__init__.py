"""winback: self-hosted marketing automation that brings shoppers back."""

__version__ = "0.1.0"
