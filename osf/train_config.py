"""Named training recipes and per-size settings, as overrides of the typed configurations.

A method's defaults are its configuration's (``osf.models.dino.DINOConfig``, ...; the shared ones in
``osf.models.base.MethodConfig``) and a run's are :class:`osf.models.pretrain_config.RunConfig`'s.
What is here only changes some of them, in this order (later wins): the method's defaults, the
backbone size's (:data:`BACKBONE_DEFAULTS`), the recipe's (``--recipe NAME|PATH``: a YAML file, the
packaged ones ``osf/recipes/<name>.yaml`` in :data:`RECIPES`), the command-line flags (DINOv2's
defaults < recipe file < command line). The repository-root ``train_config.py`` re-exports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BACKBONE_DEFAULTS", "RECIPES", "RECIPE_DIR", "Recipe", "RecipeError", "SizeDefaults", "get_recipe",
           "load_recipe"]


# --- Pre-training (osf.models, main_pipelines/main_pretrain.py) --------------------------------
@dataclass(frozen=True)
class SizeDefaults:
    """Per backbone size: a per-device batch that fits an 80 GB GPU in bf16, and stochastic depth."""

    batch_size: int
    drop_path_rate: float


BACKBONE_DEFAULTS: dict[str, SizeDefaults] = {
    "vit_pico": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_nano": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_tiny": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_small": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_middle": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_base": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_large": SizeDefaults(batch_size=128, drop_path_rate=0.1),
    "vit_xl": SizeDefaults(batch_size=64, drop_path_rate=0.1),
}


RECIPE_DIR = Path(__file__).with_name("recipes")
RECIPE_KEYS: tuple[str, ...] = ("summary", "export", "run", "backbone", "methods")
EXPORTS: tuple[str, ...] = ("teacher", "student")


class RecipeError(ValueError):
    """A recipe that cannot be used; the one-line message names the file and the key."""

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source, self.problem = str(source), problem
        super().__init__(f"recipe {source}: {problem}")


@dataclass(frozen=True)
class Recipe:
    """A named set of overrides: of the run's fields (``RunConfig``), the backbone's and each method's config fields.

    Read from a YAML file (:func:`load_recipe`); the packaged ones are ``osf/recipes/<name>.yaml``.
    Only its shape is checked here; ``osf.models.pretrain_config.checked_recipe`` checks each key and
    value against the configuration it overrides.
    """

    name: str
    summary: str = ""
    run: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The backbone main_export.py takes by default from a run of this recipe (methods without a teacher
    # always give their student): the one that probes better at the recipe's scale.
    export: str = "teacher"
    backbone: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it was read from

    def method_overrides(self, method: str) -> dict[str, Any]:
        """The fields this recipe sets for ``method`` (canonical name)."""
        return dict(self.methods.get(method, {}))


def _mapping(source: Path, where: str, value: Any) -> dict[str, Any]:
    """``value`` as a dict with text keys, or a :class:`RecipeError` naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecipeError(source, f"{where} must be a mapping of keys to values, got {type(value).__name__}")
    bad = [key for key in value if not isinstance(key, str)]
    if bad:
        raise RecipeError(source, f"{where} has a non-text key {bad[0]!r}")
    return dict(value)


def _read_yaml(source: Path) -> Any:
    try:
        return yaml.safe_load(source.read_text())
    except OSError as err:
        raise RecipeError(source, f"cannot read it ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(source, f"not valid YAML{where}: {getattr(err, 'problem', None) or err}") from err


def load_recipe(path: str | Path) -> Recipe:
    """The recipe of a YAML file (named by the file's stem); :class:`RecipeError` for an unreadable file or unknown key."""
    source = Path(path)
    data = _mapping(source, "the file", _read_yaml(source))
    unknown = [key for key in data if key not in RECIPE_KEYS]
    if unknown:
        raise RecipeError(source, f"unknown key {unknown[0]!r}; a recipe has {', '.join(RECIPE_KEYS)}")
    export = data.get("export", "teacher")
    if export not in EXPORTS:
        raise RecipeError(source, f"export must be one of {list(EXPORTS)}, got {export!r}")
    methods = _mapping(source, "methods", data.get("methods"))
    return Recipe(source.stem, str(data.get("summary") or ""), _mapping(source, "run", data.get("run")),
                  {name: _mapping(source, f"methods.{name}", fields) for name, fields in methods.items()},
                  export, _mapping(source, "backbone", data.get("backbone")), str(source))


# The packaged recipes, by name (osf/recipes/<name>.yaml; package data of the wheel).
RECIPES: dict[str, Recipe] = {path.stem: load_recipe(path) for path in sorted(RECIPE_DIR.glob("*.yaml"))}


def get_recipe(name: str | Path) -> Recipe:
    """The packaged recipe ``name``, or the recipe file at ``name`` (a ``.yaml``/``.yml`` path); ``RecipeError`` otherwise."""
    if isinstance(name, str) and name in RECIPES:
        return RECIPES[name]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise RecipeError(path, "file not found")
        return load_recipe(path)
    raise ValueError(f"unknown --recipe {str(name)!r}; choose one of {sorted(RECIPES)} or give a recipe file (.yaml)")
