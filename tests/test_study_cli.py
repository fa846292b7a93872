"""The studies' command lines are built from their typed configs: every command-line field is a flag, no flag
restates a default, and a parsed command line gives back the config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from osf.quickstart import QuickstartConfig
from osf.sleepbench.config import SleepBenchConfig


def _cli_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli")}


@pytest.mark.parametrize("entry, cls, base", [("main_quickstart", QuickstartConfig, []),
                                              ("main_sleepbench", SleepBenchConfig, ["--output_dir", "OUT"])])
def test_flags_are_the_config_fields_and_unset_flags_give_the_defaults(entry, cls, base):
    import importlib

    module = importlib.import_module(f"main_pipelines.{entry}")
    parser = module.build_parser()
    dests = {a.dest for a in parser._actions} - {"help", "tiny", "no_progress", "rerun"}
    assert dests == _cli_fields(cls)
    assert all(parser.get_default(d) is None for d in dests)  # "not given": the dataclass default applies
    cfg = module.config_from_args(parser.parse_args(base))
    expected = cls(output_dir=Path("OUT")) if base else cls()
    assert cfg == expected
    assert module.config_from_args(parser.parse_args([*base, "--tiny"])) == cls.tiny(**({"output_dir": Path("OUT")}
                                                                                       if base else {}))


def test_list_and_typed_flags_parse_into_the_config():
    from main_pipelines import main_quickstart, main_sleepbench

    args = main_quickstart.build_parser().parse_args(
        ["--tiny", "--cohorts", "shhs, mesa", "--pooling", "cls,groups", "--lr", "0.002", "--no-subprocess",
         "--seed", "3"])
    cfg = main_quickstart.config_from_args(args)
    assert (cfg.cohorts, cfg.poolings, cfg.lr, cfg.subprocess, cfg.seed) == (("shhs", "mesa"), ("cls", "groups"),
                                                                             0.002, False, 3)
    args = main_sleepbench.build_parser().parse_args(["--output_dir", "X", "--tiny", "--methods", "mae",
                                                      "--scaling_sizes", "vit_pico", "--seeds", "2"])
    cfg = main_sleepbench.config_from_args(args)
    assert (cfg.methods, cfg.scaling_sizes, cfg.seeds, cfg.output_dir) == (("mae",), ("vit_pico",), 2, Path("X"))
