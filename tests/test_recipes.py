"""Recipes as YAML files merged over the typed configurations: defaults < recipe file < command line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml

from osf.backbone.vit1d_cls import BackboneConfig
from osf.models.export import recipe_export
from osf.models.pretrain_config import (
    PretrainConfig,
    build_parser,
    checked_recipe,
    config_from_args,
    method_config,
    resolve_pretrain_config,
)
from osf.models.registry import METHODS
from osf.train_config import RECIPE_DIR, RECIPES, RecipeError, get_recipe, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
RECIPE = """\
summary: a longer run
export: student
run:
  max_epochs: 7
  batch_size: 48
backbone:
  patch_size: 32
methods:
  osf:              # an alias of dino_ours
    teacher_temp: 0.05
    global_crop_scale: [0.6, 1.0]
  mae:
    mask_ratio: 0.6
"""


def _resolve(*argv: str, method: str = "dino_ours") -> PretrainConfig:
    args = build_parser().parse_args(["--data_dir", "STORE", "--model_name", method, *argv])
    return resolve_pretrain_config(config_from_args(args))


@pytest.fixture
def recipe_file(tmp_path) -> Path:
    path = tmp_path / "longer.yaml"
    path.write_text(RECIPE)
    return path


def test_packaged_recipes_are_the_yaml_files_and_check_clean() -> None:
    assert sorted(RECIPES) == sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")) and {"osf", "small"} <= set(RECIPES)
    for name in RECIPES:
        checked = checked_recipe(name)  # every key a field, every value of its field's type
        assert checked.name == name and set(checked.methods) <= set(METHODS)
    small = RECIPES["small"]
    assert small.export == "student" and small.methods["dino"] == small.methods["dino_ours"]  # the YAML anchor
    assert isinstance(small.methods["dino_ours"]["lr"], float)  # 8.0e-3, not the text "8e-3"


def test_recipes_ship_as_package_data() -> None:
    """pyproject.toml puts osf/recipes/*.yaml in the wheel (the folder is data, not a package)."""
    text = (REPO / "pyproject.toml").read_text()
    section = re.search(r"^\[tool\.setuptools\.package-data\]\n(.*?)(?:^\[|\Z)", text, re.DOTALL | re.MULTILINE)
    assert section and re.search(r'^osf = \[.*"recipes/\*\.yaml".*\]', section.group(1), re.MULTILINE)


def test_defaults_then_recipe_then_command_line(recipe_file) -> None:
    default = _resolve()
    from_recipe = _resolve("--recipe", str(recipe_file))
    assert (default.run.max_epochs, default.run.batch_size, default.backbone.patch_size) == (30, 256, 64)
    assert (from_recipe.run.max_epochs, from_recipe.run.batch_size, from_recipe.backbone.patch_size) == (7, 48, 32)
    assert from_recipe.method.teacher_temp == 0.05 and from_recipe.method.global_crop_scale == (0.6, 1.0)
    # what the recipe leaves alone keeps its default
    assert from_recipe.method.lr == default.method.lr and from_recipe.run.precision == default.run.precision
    assert from_recipe.backbone.name == default.backbone.name == BackboneConfig().name
    flags = _resolve("--recipe", str(recipe_file), "--max_epochs", "3", "--patch_size_time", "64", "--teacher_temp",
                     "0.06")
    assert (flags.run.max_epochs, flags.backbone.patch_size, flags.method.teacher_temp) == (3, 64, 0.06)
    assert flags.run.batch_size == 48  # still the recipe's
    assert _resolve("--recipe", str(recipe_file), method="mae").method.mask_ratio == 0.6
    # Python builds the same method config as the command line
    assert method_config("osf", recipe=str(recipe_file)) == from_recipe.method


def test_a_recipe_may_choose_the_backbone_and_the_size_defaults_follow(tmp_path) -> None:
    path = tmp_path / "large.yaml"
    path.write_text("backbone:\n  name: vit_large\n")
    cfg = _resolve("--recipe", str(path))
    assert cfg.backbone.name == "vit_large" and cfg.run.batch_size == 128 and cfg.backbone.drop_path_rate == 0.1
    assert _resolve("--recipe", str(path), "--psg_encoder_name", "vit_nano").backbone.name == "vit_nano"


@pytest.mark.parametrize(("text", "message"), [
    ("run:\n  max_epoch: 3\n", "unknown key run.max_epoch; did you mean run.max_epochs?"),
    ("method:\n  dino: {}\n", "unknown key 'method'; a recipe has summary, export, run, backbone, methods"),
    ("methods:\n  dinov9:\n    lr: 1.0\n", "unknown key methods.dinov9; methods are ["),
    ("methods:\n  simclr:\n    mask_ratio: 0.5\n", "unknown key methods.simclr.mask_ratio; "),
    ("backbone:\n  patch_sise: 32\n", "unknown key backbone.patch_sise; did you mean backbone.patch_size?"),
    ("methods:\n  dino:\n    lr: 8e-3\n", "methods.dino.lr: expected a number, got '8e-3' (YAML reads 1e-3 as text"),
    ("run:\n  max_steps: ten\n", "run.max_steps: expected a int, got 'ten'"),
    ("methods:\n  dino:\n    global_crop_scale: 0.5\n", "methods.dino.global_crop_scale: expected 2 values"),
    ("methods:\n  dino_ours:\n    head_pooling: max\n", "methods.dino_ours.head_pooling: must be one of"),
    ("backbone:\n  name: vit_huge\n", "backbone.name 'vit_huge' is not one of"),
    ("export: ema\n", "export must be one of ['teacher', 'student'], got 'ema'"),
    ("run: [1, 2]\n", "run must be a mapping of keys to values, got list"),
    ("run:\n  max_epochs: [\n", "not valid YAML at line"),
])
def test_a_bad_recipe_is_refused_in_one_line_naming_the_file_and_key(tmp_path, text, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        _resolve("--recipe", str(path))
    assert str(caught.value).startswith(f"recipe {path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_main_pretrain_exits_with_the_recipe_line(tmp_path, capsys) -> None:
    from main_pipelines import main_pretrain

    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  max_epoch: 3\n")
    with pytest.raises(SystemExit, match=rf"^main_pretrain: recipe {path}: unknown key run.max_epoch; "):
        main_pretrain.main(["--data_dir", "STORE", "--recipe", str(path)])
    with pytest.raises(SystemExit, match=r"unknown --recipe 'huge'; choose one of \['osf', 'small'\] or give a recipe"):
        main_pretrain.main(["--data_dir", "STORE", "--recipe", "huge"])
    with pytest.raises(SystemExit, match=r"recipe .*missing.yaml: file not found"):
        main_pretrain.main(["--data_dir", "STORE", "--recipe", str(tmp_path / "missing.yaml")])


def test_a_named_recipe_and_its_file_are_the_same(tmp_path) -> None:
    assert get_recipe("small") == load_recipe(RECIPE_DIR / "small.yaml")
    copy = tmp_path / "small.yaml"
    copy.write_text((RECIPE_DIR / "small.yaml").read_text())
    named, from_file = _resolve("--recipe", "small"), _resolve("--recipe", str(copy))
    assert named.recipe == "small" and from_file.recipe == str(copy.resolve())
    assert dataclasses.replace(from_file, recipe="small") == named


def test_the_recorded_config_round_trips(recipe_file, tmp_path) -> None:
    cfg = _resolve("--recipe", str(recipe_file), "--max_steps", "5")
    record = yaml.safe_load(yaml.safe_dump(cfg.to_record()))
    assert record["recipe"] == str(recipe_file.resolve()) and record["recipe_export"] == "student"
    assert PretrainConfig.from_record(record) == cfg
    assert recipe_export({"run_config": record}) == "student"
    # records written before recipe_export existed still say what their recipe exports
    for name, export in (("small", "student"), ("osf", "teacher")):
        old = {k: v for k, v in _resolve("--recipe", name).to_record().items() if k != "recipe_export"}
        assert PretrainConfig.from_record(old).export == export == recipe_export({"run_config": old})


def test_a_run_records_its_resolved_config(tiny_store, recipe_file, tmp_path) -> None:
    """A short run from a recipe file: RUN/config.yaml and the checkpoint hold the resolved config, which rebuilds it."""
    from main_pipelines import main_pretrain

    argv = ["--model_name", "osf", "--recipe", str(recipe_file), "--data_dir", str(tiny_store), "--max_steps", "2",
            "--psg_encoder_name", "vit_nano", "--batch_size", "4", "--accelerator", "cpu", "--logger", "none",
            "--dino_out_dim", "64", "--dino_hidden_dim", "64", "--dino_bottleneck_dim", "32", "--no-progress_bar",
            "--limit_val_batches", "1", "--output_dir", str(tmp_path), "--run_name", "r"]
    result = main_pretrain.main(argv)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    expected = _resolve(*argv[2:])
    assert PretrainConfig.from_record(saved) == expected
    assert saved["patch_size_time"] == 32 and saved["method_kwargs"]["teacher_temp"] == 0.05  # the recipe's
    assert saved["max_epochs"] == 7 and saved["batch_size"] == 4  # the recipe's, then the flag's
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["osf"]["run_config"]["recipe_export"] == "student"
