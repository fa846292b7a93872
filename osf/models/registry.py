"""Registry of self-supervised pre-training methods (name -> PretrainModule subclass).

Importing this module runs ``osf/models/__init__.py`` first, which imports (and so registers) every method
module; the registry itself imports nothing of ``osf``, so no method module depends on it in a cycle.
``create_method`` (the configured constructor) lives with the configuration, in ``pretrain_config``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["ALIASES", "METHODS", "list_methods", "methods_in_order", "register_method",
           "resolve_method_name", "unregister_method"]

METHODS: dict[str, type] = {}
ALIASES: dict[str, str] = {}

T = TypeVar("T", bound=type)


def register_method(name: str, aliases: tuple[str, ...] = (), rank: int = 100) -> Callable[[T], T]:
    """Class decorator registering a PretrainModule subclass under ``name`` (and ``aliases``); ``rank`` orders
    the method in studies and tables (:func:`methods_in_order`; OSF first, then the baselines)."""

    def wrap(cls: T) -> T:
        for key in (name, *aliases):
            if key in METHODS or key in ALIASES:
                raise ValueError(f"method name {key!r} is already registered")
        METHODS[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        cls.method_name = name
        cls.method_rank = rank
        return cls

    return wrap


def unregister_method(name: str) -> None:
    """Remove a registered method and its aliases (tests that register a toy objective)."""
    METHODS.pop(name, None)
    for alias in [a for a, target in ALIASES.items() if target == name]:
        del ALIASES[alias]


def resolve_method_name(name: str) -> str:
    """Canonical name of a method given its name or an alias; clear error when unknown."""
    canonical = ALIASES.get(name, name)
    if canonical not in METHODS:
        known = sorted([*METHODS, *ALIASES])
        raise ValueError(f"unknown pre-training method {name!r}; known: {known}")
    return canonical


def list_methods() -> list[str]:
    """Canonical names of the registered methods."""
    return sorted(METHODS)


def methods_in_order() -> tuple[str, ...]:
    """Canonical names of the registered methods in study order (rank, then name): the default method list
    of SleepBench-mini, the sweeps and the benchmarks."""
    return tuple(sorted(METHODS, key=lambda name: (getattr(METHODS[name], "method_rank", 100), name)))
