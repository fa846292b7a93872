"""The configuration of a pre-training run: typed records, their resolution, and their flags.

A :class:`PretrainConfig` is the method's name, the recipe's name, a :class:`RunConfig` (data, run
length, hardware, outputs) and the method's own configuration (a ``MethodConfig`` subclass kept next
to the method, holding its ``BackboneConfig``). Values come from, later winning: the dataclass
defaults, the backbone size's (``osf.train_config.BACKBONE_DEFAULTS``), the recipe's (a YAML file:
``--recipe NAME`` for ``osf/recipes/NAME.yaml``, or a path; :func:`checked_recipe` checks it against these
dataclasses), the given ones. :func:`method_config` does this for Python
(``create_method``), :func:`resolve_pretrain_config` for the flat values of the command line, whose
flags :func:`build_parser` makes from the same dataclasses (names, types, help, defaults).
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from osf.backbone.vit1d_cls import BACKBONES, BackboneConfig, list_backbones
from osf.models.base import MethodConfig, PretrainModule
from osf.models.diagnostics import DEFAULT_BATCH_SIZE, DEFAULT_EVERY_N_STEPS
from osf.models.registry import ALIASES, METHODS, list_methods, resolve_method_name
from osf.train_config import BACKBONE_DEFAULTS, RECIPES, Recipe, RecipeError, get_recipe
from osf.utils.config_fields import (
    Flag,
    add_flag,
    field_names,
    flags_of,
    from_record,
    option,
    to_record,
    value_problem,
    with_overrides,
)

__all__ = [
    "LOGGERS",
    "PRECISION_ALIASES",
    "PretrainConfig",
    "RunConfig",
    "build_parser",
    "checked_recipe",
    "config_from_args",
    "create_method",
    "method_config",
    "resolve_pretrain_config",
]

LOGGERS: tuple[str, ...] = ("wandb", "csv", "tensorboard", "none")
PRECISION_ALIASES: dict[str, str] = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "fp32": "32-true"}
GROUPS: tuple[str, ...] = ("model", "optimisation", "method parameters", "data", "hardware", "run")


@dataclass
class RunConfig:
    """Everything about a pre-training run that is not the method: data, length, hardware, outputs."""

    data_dir: str | None = option(None, help="epoch store folder (main_preprocess.py output)", group="data",
                                  required=True)
    include_datasets: str | None = option(None, help="comma-separated dataset names (default: all pretrain "
                                                     "datasets)", group="data")
    train_data_pct: float = option(1.0, help="fraction of training subjects used", group="data")
    num_workers: int = option(0, help="DataLoader workers per device", group="data")
    probe_label: str = option("Stage", help="label for the online linear probe when the store has it ('' disables)",
                              group="data")
    batch_size: int = option(256, help="per-device batch size", group="optimisation")
    lr_base_batch: int | None = option(None, help="--lr is given per this many samples and scaled linearly with the "
                                                  "global batch (batch x devices x nodes x accumulation), as DINO's "
                                                  "lr x B/256", group="optimisation")
    max_epochs: int = option(30, help="epochs unless --max_steps is set", group="optimisation")
    max_steps: int = option(-1, help="optimizer steps; takes precedence over --max_epochs", group="optimisation")
    accumulate_grad_batches: int = option(1, help="micro-batches per optimizer step", group="optimisation")
    accelerator: str = option("auto", help="auto, cpu, gpu, ...", group="hardware")
    num_devices: int = option(1, help="devices per node; > 1 runs DDP", group="hardware")
    num_nodes: int = option(1, help="nodes (with SLURM: srun sets the ranks)", group="hardware")
    precision: str = option("32-true", help="32-true, bf16-mixed (alias bf16; the published recipe on GPUs), "
                                            "16-mixed", group="hardware")
    output_dir: str = option("runs", help="parent folder of the run folder", group="run")
    run_name: str | None = option(None, help="run folder name (default: method_backbone_timestamp, or the resumed "
                                             "run's)", group="run")
    ckpt_path: str | None = option(None, help="resume from this Lightning checkpoint (e.g. "
                                              "RUN/checkpoints/last.ckpt)", group="run")
    ckpt_every_n_steps: int = option(1000, help="periodic checkpoint interval", group="run")
    val_every_n_steps: int | None = option(None, help="validation interval (default: the checkpoint interval)",
                                           group="run")
    limit_val_batches: float | None = option(None, help="fraction (<= 1) or number of val batches (default: all)",
                                             group="run")
    log_every_n_steps: int = option(50, help="logging interval", group="run")
    logger: str = option("csv", help=f"comma-separated: {', '.join(LOGGERS)} (wandb runs offline)", group="run")
    progress_bar: bool = option(True, help="show the progress bar", group="run")
    diag_every_n_steps: int = option(DEFAULT_EVERY_N_STEPS, help="learning diagnostics (RankMe, embedding std, DINO "
                                     "entropies) on a fixed batch every N optimizer steps, WARNING on collapse, "
                                     "summary in RUN/diagnostics.json (0: off)", group="run")
    diag_batch_size: int = option(DEFAULT_BATCH_SIZE, help="epochs in the fixed diagnostics batch", group="run")
    wandb_project: str = option("osf", help="wandb project", cli=False)

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all devices and nodes."""
        return self.batch_size * self.num_devices * self.num_nodes * self.accumulate_grad_batches

    @property
    def loggers(self) -> list[str]:
        """The loggers named by ``logger``."""
        return [name for name in self.logger.split(",") if name and name != "none"]


@dataclass
class PretrainConfig:
    """One pre-training run: which method with which settings, on which data, for how long, where to."""

    method_name: str  # canonical registered name
    method: MethodConfig
    run: RunConfig = field(default_factory=RunConfig)
    recipe: str = "osf"  # a packaged recipe's name, or the path of the recipe file
    base_lr: float | None = None  # --lr as given when lr_base_batch scaled it; method.lr is the rate applied
    export: str = "teacher"  # the recipe's choice of backbone for main_export.py (Recipe.export)

    @property
    def backbone(self) -> BackboneConfig:
        """The backbone the method trains."""
        return self.method.backbone

    def to_record(self) -> dict[str, Any]:
        """The flat record of ``RUN/config.yaml`` and checkpoints: the flags' values, ``method_kwargs``, ``backbone_kwargs``."""
        method = to_record(self.method)
        backbone = method.pop("backbone")
        record = {**to_record(self.run), "model_name": self.method_name, "recipe": self.recipe,
                  "recipe_export": self.export,
                  **{flag.name: backbone[flag.field] for flag in flags_of(BackboneConfig)},
                  **{flag.name: method[flag.field] for flag in _grouped_method_flags()},
                  "method_kwargs": method, "backbone_kwargs": self.backbone.constructor_kwargs()}
        if self.base_lr is not None:
            record["base_lr"] = self.base_lr
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PretrainConfig:
        """The configuration :meth:`to_record` wrote (e.g. a run's ``config.yaml``), nothing re-resolved."""
        method_name = resolve_method_name(record["model_name"])
        backbone = {"name": record["psg_encoder_name"], **record["backbone_kwargs"]}
        method = from_record(METHODS[method_name].config_type, {**record["method_kwargs"], "backbone": backbone})
        run = from_record(RunConfig, {k: record[k] for k in field_names(RunConfig) if k in record})
        recipe = record.get("recipe", "osf")
        export = record.get("recipe_export") or (RECIPES[recipe].export if recipe in RECIPES else "teacher")
        return cls(method_name, method, run, recipe, record.get("base_lr"), export)


# --- resolution -----------------------------------------------------------------------------------
def _checked_fields(recipe: Recipe, where: str, cls: type, values: Mapping[str, Any]) -> None:
    """Every key of ``values`` is a field of ``cls`` holding a value of its type; else one :class:`RecipeError` line."""
    fields = sorted(field_names(cls) - {"backbone"})
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {where}.{close[0]}?" if close else f"{cls.__name__} has {', '.join(fields)}"
            raise RecipeError(recipe.source or recipe.name, f"unknown key {where}.{key}; {hint}")
        problem = value_problem(cls, key, value)
        if problem:
            raise RecipeError(recipe.source or recipe.name, f"{where}.{key}: {problem}")


def checked_recipe(recipe: str | Path | Recipe) -> Recipe:
    """The recipe (packaged name, file or :class:`Recipe`) with every key and value checked against the configuration
    it overrides, its methods keyed by canonical name; :class:`RecipeError` naming the file and the key otherwise."""
    chosen = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    source = chosen.source or chosen.name
    _checked_fields(chosen, "run", RunConfig, chosen.run)
    _checked_fields(chosen, "backbone", BackboneConfig, {k: v for k, v in chosen.backbone.items() if k != "name"})
    if chosen.backbone.get("name", BackboneConfig().name) not in BACKBONES:
        raise RecipeError(source, f"backbone.name {chosen.backbone['name']!r} is not one of {list_backbones()}")
    methods: dict[str, dict[str, Any]] = {}
    for key, fields in chosen.methods.items():
        name = ALIASES.get(key, key)
        if name not in METHODS:
            raise RecipeError(source, f"unknown key methods.{key}; methods are {sorted([*METHODS, *ALIASES])}")
        if name in methods:
            raise RecipeError(source, f"methods.{key} sets {name!r} a second time")
        _checked_fields(chosen, f"methods.{key}", METHODS[name].config_type, fields)
        methods[name] = dict(fields)
    return replace(chosen, methods=methods)


def _backbone_fields(backbone_name: str | None, recipe: Recipe, given: Mapping[str, Any]) -> dict[str, Any]:
    """Backbone fields: defaults < the size's < the recipe's < ``given`` (the name: given, else the recipe's)."""
    from_recipe = dict(recipe.backbone)
    name = backbone_name or from_recipe.pop("name", None) or BackboneConfig().name
    from_recipe.pop("name", None)
    size = BACKBONE_DEFAULTS.get(name)
    return {"name": name, **({"drop_path_rate": size.drop_path_rate} if size else {}), **from_recipe, **given}


def method_config(method: str, backbone_name: str | None = None, recipe: str | Path | Recipe = "osf",
                  **fields: Any) -> MethodConfig:
    """The configuration of ``method`` as ``main_pretrain.py`` builds it: defaults < size < recipe < ``fields``.

    ``backbone_name`` defaults to the recipe's, else ``BackboneConfig``'s (vit_base). ``fields`` are fields of the
    method's config; ``backbone`` (a dict of ``BackboneConfig`` fields) and, as ``create_method`` always took,
    ``backbone_kwargs`` (backbone constructor arguments) are merged.
    """
    name = resolve_method_name(method)
    chosen = checked_recipe(recipe)
    given = {**(fields.pop("backbone_kwargs", None) or {}), **fields.pop("backbone", {})}
    cfg = with_overrides(METHODS[name].config_type(), {"backbone": _backbone_fields(backbone_name, chosen, given)})
    return with_overrides(with_overrides(cfg, chosen.method_overrides(name)), fields)


def create_method(name: str, backbone_name: str | None = None, **fields: Any) -> PretrainModule:
    """Build the method ``name`` (or alias) on ``backbone_name`` with the configuration the command line builds.

    That is :func:`method_config`: the method's config defaults, the size's, then ``fields`` (fields of the
    config; ``backbone_kwargs`` are backbone constructor arguments).
    """
    return METHODS[resolve_method_name(name)](method_config(name, backbone_name, **fields))


def resolve_pretrain_config(values: Mapping[str, Any]) -> PretrainConfig:
    """The run described by flat flag values (:func:`config_from_args`; ``None`` = not given).

    Method parameters come as flags or under ``method_kwargs``; one the method does not take fails
    loudly, naming what it takes.
    """
    method_name = resolve_method_name(values["model_name"])
    recipe = checked_recipe(values.get("recipe") or "osf")
    backbone = _given_backbone(values, recipe)
    run = _run_config(values, recipe.run, backbone["name"])
    method = method_config(method_name, backbone.pop("name"), recipe, backbone=backbone,
                           **_given_method_fields(values, method_name))
    method, base_lr = _scaled_lr(method, run)
    packaged = recipe.name in RECIPES and RECIPES[recipe.name].source == recipe.source
    label = recipe.name if packaged else str(Path(recipe.source).resolve())  # a file's path, as found then
    return PretrainConfig(method_name, method, run, label, base_lr, recipe.export)


def _given(values: Mapping[str, Any], flags: Iterable[Flag]) -> dict[str, Any]:
    """Field -> value of the ``flags`` given (not ``None``) in ``values``."""
    return {flag.field: values[flag.name] for flag in flags if values.get(flag.name) is not None}


def _given_backbone(values: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The backbone fields given, with the size's name checked (default: the recipe's, else ``BackboneConfig``'s)."""
    given = {"name": recipe.backbone.get("name", BackboneConfig().name), **_given(values, flags_of(BackboneConfig))}
    if given["name"] not in BACKBONES:
        raise ValueError(f"unknown --psg_encoder_name {given['name']!r}; registered: {list_backbones()}")
    return given


def _run_config(values: Mapping[str, Any], recipe_run: Mapping[str, Any], backbone_name: str) -> RunConfig:
    """``RunConfig`` defaults < the size's batch < the recipe's run fields < the given flags; then checked."""
    size = BACKBONE_DEFAULTS.get(backbone_name)
    given = {name: values[name] for name in field_names(RunConfig) if values.get(name) is not None}
    run = RunConfig()
    for layer in ({"batch_size": size.batch_size} if size else {}, recipe_run, given):
        run = with_overrides(run, layer)
    return _checked_run(run)


def _checked_run(run: RunConfig) -> RunConfig:
    """Precision aliases, a finite run length, integer batch counts above 1, known loggers."""
    if run.max_steps <= 0 and not run.max_epochs:
        raise ValueError("set --max_steps or --max_epochs: the schedules need a finite run length")
    limit = run.limit_val_batches
    loggers = [name.strip() for name in str(run.logger or "none").split(",") if name.strip()]
    unknown = [name for name in loggers if name not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown --logger {unknown}; choose from {list(LOGGERS)} (comma-separated)")
    return replace(run, precision=PRECISION_ALIASES.get(str(run.precision), str(run.precision)), logger=",".join(loggers),
                   limit_val_batches=int(limit) if limit is not None and limit > 1 else limit)


def _given_method_fields(values: Mapping[str, Any], method_name: str) -> dict[str, Any]:
    """The method fields given as flags or in ``method_kwargs``; refuses fields the method does not have."""
    given = _given(values, method_flags().values())
    given.update({k: v for k, v in (values.get("method_kwargs") or {}).items() if v is not None})
    accepted = field_names(METHODS[method_name].config_type) - {"backbone"}
    not_accepted = sorted(set(given) - accepted)
    if not_accepted:
        raise ValueError(f"method {method_name!r} has no parameter(s) {not_accepted}; it takes {sorted(accepted)}")
    return given


def _scaled_lr(method: MethodConfig, run: RunConfig) -> tuple[MethodConfig, float | None]:
    """With ``lr_base_batch``, ``lr`` is per that many samples (DINO: lr x B / 256): scale it to the global batch."""
    if not run.lr_base_batch:
        return method, None
    return replace(method, lr=method.lr * run.global_batch / run.lr_base_batch), method.lr


# --- command line ---------------------------------------------------------------------------------
def method_flags() -> dict[str, Flag]:
    """Flag name -> flag of every registered method's config fields (one flag per name)."""
    out: dict[str, Flag] = {}
    for name in list_methods():
        for flag in flags_of(METHODS[name].config_type):
            seen = out.setdefault(flag.name, flag)
            if (seen.kind, seen.nargs) != (flag.kind, flag.nargs):
                raise TypeError(f"field {flag.field!r} has different types across methods; one flag cannot set both")
    return out


def _grouped_method_flags() -> list[Flag]:
    """The shared method fields shown among the model / optimisation flags (``--lr``, ``--seed``, ``--compile``)."""
    return [flag for flag in flags_of(MethodConfig) if flag.group]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def _by_value(labelled: Mapping[str, Any]) -> str:
    """``"a (x, y), b (z)"`` from label -> value; just ``"a"`` when every label has the same value."""
    groups: dict[str, list[str]] = {}
    for label, value in labelled.items():
        groups.setdefault(_shown(value), []).append(label)
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{value} ({', '.join(labels)})" for value, labels in groups.items())


def _method_default_text(flag: Flag) -> str | None:
    """Per-method defaults of a method field: one value, or the value per method."""
    defaults = {name: getattr(METHODS[name].config_type(), flag.field) for name in list_methods()
                if flag.field in field_names(METHODS[name].config_type)}
    if all(value is None for value in defaults.values()):
        return None
    if len(defaults) < len(METHODS) and len({_shown(v) for v in defaults.values()}) == 1:
        return f"{_shown(next(iter(defaults.values())))} ({', '.join(defaults)})"
    return _by_value(defaults)


def _layered_default_text(flag: Flag, default: Any) -> str | None:
    """A run or backbone default, followed by the sizes and recipes that change it."""
    parts = [] if default is None else [_shown(default)]
    sizes = {size: getattr(d, flag.field) for size, d in BACKBONE_DEFAULTS.items()
             if hasattr(d, flag.field) and getattr(d, flag.field) != default}
    if sizes:
        parts.append(f"per size {_by_value(sizes)}" if len({*map(_shown, sizes.values())}) > 1 else
                     f"{_by_value(sizes)} for {', '.join(sizes)}")
    parts += [f"--recipe {r.name}: {_shown(r.run[flag.field])}" for r in RECIPES.values() if flag.field in r.run]
    if default is None and parts:
        parts.insert(0, "none")
    return "; ".join(parts) or None


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The flags of ``main_pretrain.py``, built from the configuration dataclasses (published names kept)."""
    methods = ", ".join(list_methods() + [f"{a} (= {c})" for a, c in sorted(ALIASES.items())])
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    groups["model"].add_argument("--model_name", default="dino_ours", help=f"pre-training method: {methods} "
                                                                           "(default: dino_ours)")
    groups["optimisation"].add_argument("--recipe", default="osf", metavar="NAME|PATH",
                                        help="a recipe: settings merged over the defaults, from a YAML file, or by "
                                             "name from osf/recipes/: "
                                             + "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values())
                                             + ". Flags override it (default: osf)")
    backbone_defaults, run_defaults = BackboneConfig(), RunConfig()
    for flag in flags_of(BackboneConfig):
        add_flag(groups["model"], flag, _layered_default_text(flag, getattr(backbone_defaults, flag.field)))
    for flag in method_flags().values():
        add_flag(groups[flag.group or "method parameters"], flag, _method_default_text(flag))
    groups["method parameters"].add_argument(
        "--method_kwargs", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="any other constructor parameter of the method (value parsed as JSON), repeatable")
    for flag in flags_of(RunConfig):
        add_flag(groups[flag.group], flag, _layered_default_text(flag, getattr(run_defaults, flag.field)))
    return parser


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat flag values of a parsed command line (``None`` = not given), ``--method_kwargs`` as a dict."""
    values = vars(args).copy()
    values["method_kwargs"] = dict(values.get("method_kwargs") or [])
    return values
