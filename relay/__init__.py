"""relay: a self-hosted SMTP relay that accepts, tracks, signs and delivers mail."""

__version__ = "0.1.0"
