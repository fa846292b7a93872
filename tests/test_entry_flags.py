"""Every entry point with a typed configuration: its flags are built from the dataclasses, so an unset flag
gives the dataclass default and every command-line field has exactly one flag (no hand-spelled copy to drift).

main_quickstart and main_sleepbench (QuickstartConfig, SleepBenchConfig) are checked the same way in
tests/test_study_cli.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest


def _finetune() -> tuple[Any, Callable, list[str], Any, tuple[type, ...]]:
    from main_pipelines import main_finetune
    from osf.downstream.run_config import LEVELS, DownstreamConfig

    return (main_finetune.build_parser(), main_finetune.config_from_args, ["--data_dir", "S", "--output_dir", "O"],
            DownstreamConfig(data_dir="S", output_dir="O"), (DownstreamConfig, *LEVELS.values()))


def _pretrain() -> tuple[Any, Callable, list[str], Any, tuple[type, ...]]:
    from main_pipelines import main_pretrain
    from osf.backbone.vit1d_cls import BackboneConfig
    from osf.models.pretrain_config import PretrainConfig, RunConfig, method_config, method_flags, resolve_pretrain_config

    def resolve(args: Any) -> PretrainConfig:
        return resolve_pretrain_config(main_pretrain.config_from_args(args))

    expected = PretrainConfig("dino_ours", method_config("dino_ours"), RunConfig(data_dir="S"), "osf")
    fields = {flag.name for flag in method_flags().values()}
    return main_pretrain.build_parser(), resolve, ["--data_dir", "S"], expected, (BackboneConfig, RunConfig, fields)


def _ceiling() -> tuple[Any, Callable, list[str], Any, tuple[type, ...]]:
    from main_pipelines import main_ceiling
    from osf.downstream.ceilings import CeilingConfig

    return (main_ceiling.build_parser(), main_ceiling.config_from_args, ["--kind", "handcrafted", "--data_dir", "S"],
            CeilingConfig(kind="handcrafted", data_dir="S"), (CeilingConfig,))


# Entry point -> (parser, parsed args -> config, the required flags, the config they must give, where flags come from).
ENTRY_POINTS: dict[str, Callable[[], tuple[Any, Callable, list[str], Any, tuple]]] = {
    "main_finetune": _finetune, "main_pretrain": _pretrain, "main_ceiling": _ceiling,
}
# Flags that are not a configuration field (they choose among configurations).
NOT_FIELDS = {"main_pretrain": {"model_name", "recipe", "method_kwargs"}}


def _cli_fields(sources: tuple) -> set[str]:
    out: set[str] = set()
    for source in sources:
        if isinstance(source, set):
            out |= source
            continue
        out |= {f.metadata.get("flag") or f.name for f in dataclasses.fields(source) if f.metadata.get("cli")}
    return out


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_unset_flags_give_the_dataclass_defaults(entry):
    parser, resolve, required, expected, _ = ENTRY_POINTS[entry]()
    assert resolve(parser.parse_args(required)) == expected


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_flag_is_a_config_field_and_every_field_a_flag(entry):
    parser, _, _, _, sources = ENTRY_POINTS[entry]()
    flags = {a.dest for a in parser._actions if a.dest != "help"} - NOT_FIELDS.get(entry, set())
    assert flags == _cli_fields(sources)


def test_a_flag_missing_from_the_config_would_be_caught():
    """The check above fails on a hand-added flag (what the old drift test existed for)."""
    parser, _, _, _, sources = ENTRY_POINTS["main_ceiling"]()
    parser.add_argument("--hand_spelled", type=int, default=3)
    assert {a.dest for a in parser._actions if a.dest != "help"} != _cli_fields(sources)
