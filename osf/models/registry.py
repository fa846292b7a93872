"""Registry of self-supervised pre-training methods (name -> PretrainModule subclass)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from osf.models.base import PretrainModule

__all__ = ["ALIASES", "METHODS", "create_method", "list_methods", "register_method", "resolve_method_name"]

METHODS: dict[str, type] = {}
ALIASES: dict[str, str] = {}

T = TypeVar("T", bound=type)


def register_method(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator registering a PretrainModule subclass under ``name`` (and ``aliases``)."""

    def wrap(cls: T) -> T:
        for key in (name, *aliases):
            if key in METHODS or key in ALIASES:
                raise ValueError(f"method name {key!r} is already registered")
        METHODS[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        cls.method_name = name
        return cls

    return wrap


def _import_methods() -> None:
    # Importing the package registers every method module listed in osf/models/__init__.py.
    import osf.models  # noqa: F401


def resolve_method_name(name: str) -> str:
    """Canonical name of a method given its name or an alias; clear error when unknown."""
    _import_methods()
    canonical = ALIASES.get(name, name)
    if canonical not in METHODS:
        known = sorted([*METHODS, *ALIASES])
        raise ValueError(f"unknown pre-training method {name!r}; known: {known}")
    return canonical


def list_methods() -> list[str]:
    """Canonical names of the registered methods."""
    _import_methods()
    return sorted(METHODS)


def create_method(name: str, backbone_name: str = "vit_base", **fields: Any) -> PretrainModule:
    """Build the method ``name`` (or alias) on ``backbone_name`` with the configuration the command line builds.

    That is :func:`osf.models.pretrain_config.method_config`: the method's config defaults, the size's,
    then ``fields`` (fields of the config; ``backbone_kwargs`` are backbone constructor arguments).
    """
    from osf.models.pretrain_config import method_config

    return METHODS[resolve_method_name(name)](method_config(name, backbone_name, **fields))
