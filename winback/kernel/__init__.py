"""Standard-library-only building blocks shared by every layer: clock, money, errors."""
