"""Test-signal factories: small random stores and recordings for tests, benchmarks and examples."""

from osf.testing.stores import make_random_store, random_recording

__all__ = ["make_random_store", "random_recording"]
