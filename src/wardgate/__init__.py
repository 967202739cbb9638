"""wardgate: an identity-aware gateway that proves automated agents follow policy."""

__version__ = "0.1.0"
