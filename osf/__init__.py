"""OSF: Open Sleep Foundation models for polysomnography."""

__version__ = "0.1.0"
