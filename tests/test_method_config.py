"""One source of truth per method: the Python constructor and the command line build the same configuration."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from osf.models.base import MethodConfig
from osf.models.pretrain_config import (
    PretrainConfig,
    build_parser,
    config_from_args,
    method_config,
    method_flags,
    resolve_pretrain_config,
)
from osf.models import create_method
from osf.models.registry import METHODS, list_methods
from osf.train_config import RECIPES
from osf.utils.config_fields import flags_of, from_record, to_record

pytestmark = pytest.mark.usefixtures("one_thread")

METHOD_NAMES = list_methods()
SHARED_FLAGS = ["--lr", "1e-3", "--seed", "3", "--weight_decay", "0.01", "--compile", "--patch_size_time", "32",
                "--drop_path_rate", "0.1"]
SHARED_FIELDS = {"lr": 1e-3, "seed": 3, "weight_decay": 0.01, "compile_backbone": True,
                 "backbone_kwargs": {"patch_size": 32, "drop_path_rate": 0.1}}


def _command_line(method: str, *argv: str, size: str = "vit_nano") -> PretrainConfig:
    args = build_parser().parse_args(["--data_dir", "STORE", "--model_name", method, "--psg_encoder_name", size, *argv])
    return resolve_pretrain_config(config_from_args(args))


def _other_value(config: object, name: str) -> tuple[str, object]:
    """A value of field ``name`` unlike its default, as a flag argument and as a Python value."""
    value = getattr(config, name)
    if isinstance(value, bool):
        return ("" if value else "yes"), not value
    if isinstance(value, tuple):
        return f"{value[0] / 2} {value[1]}", (value[0] / 2, value[1])
    if isinstance(value, str):
        field = next(f for f in dataclasses.fields(config) if f.name == name)
        other = next(c for c in field.metadata["choices"] if c != value)
        return other, other
    other = value + 1 if isinstance(value, int) else value / 2
    return str(other), other


def _own_field(method: str) -> str | None:
    """The first field of the method's config that the shared MethodConfig does not have, if any."""
    config_type = METHODS[method].config_type
    shared = {f.name for f in dataclasses.fields(MethodConfig)}
    own = [f.name for f in dataclasses.fields(config_type) if f.name not in shared and f.metadata.get("cli")]
    return own[0] if own else None


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_python_and_command_line_defaults_agree(method):
    """No flags: the class default, create_method and main_pretrain.py build equal configs."""
    assert METHODS[method].config_type() == _command_line(method, size="vit_base").method
    model = create_method(method, "vit_nano")
    assert model.cfg == _command_line(method).method
    assert type(model.cfg) is METHODS[method].config_type


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_python_and_command_line_agree_with_flags(method):
    flags, fields = list(SHARED_FLAGS), dict(SHARED_FIELDS)
    own = _own_field(method)
    if own is not None:
        argument, value = _other_value(METHODS[method].config_type(), own)
        if isinstance(value, bool):
            flags.append(f"--{own}" if value else f"--no-{own}")
        else:
            flags += [f"--{own}", *argument.split()]
        fields[own] = value
    from_cli = _command_line(method, *flags).method
    assert from_cli == create_method(method, "vit_nano", **fields).cfg
    assert from_cli.lr == 1e-3 and from_cli.backbone.patch_size == 32 and from_cli.compile_backbone


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_recipes_round_trip(method, recipe):
    """A recipe gives the same config from Python and from the command line, and survives its record."""
    python = method_config(method, "vit_nano", recipe=recipe)
    cli = _command_line(method, "--recipe", recipe)
    unscaled = dataclasses.replace(cli.method, lr=cli.base_lr if cli.base_lr is not None else cli.method.lr)
    assert unscaled == python
    for key, value in RECIPES[recipe].method_overrides(cli.method_name).items():
        assert getattr(python, key) == (tuple(value) if isinstance(value, list) else value), key
    record = yaml.safe_load(yaml.safe_dump(cli.to_record()))
    assert PretrainConfig.from_record(record) == cli
    assert from_record(type(python), yaml.safe_load(yaml.safe_dump(to_record(python)))) == python


def test_every_config_field_has_one_flag_of_its_type():
    parser_flags = {a.dest for a in build_parser()._actions}
    for method in METHOD_NAMES:
        hints = typing.get_type_hints(METHODS[method].config_type)
        for flag in flags_of(METHODS[method].config_type):
            assert flag.name in parser_flags, flag
            assert method_flags()[flag.name].kind is flag.kind, (method, flag, hints[flag.field])
    help_text = " ".join(build_parser().format_help().split())
    assert "AdamW weight decay (default: 0.05 (ar, mae, sleepfm, vqvae), 0.2 (dino, dino_ours), 0.1 (simclr))" in help_text


def test_a_flag_of_another_method_is_refused():
    with pytest.raises(ValueError, match=r"method 'simclr' has no parameter\(s\) \['dino_out_dim'\]"):
        _command_line("simclr", "--dino_out_dim", "64")
    with pytest.raises(TypeError, match="SimCLRConfig has no field"):
        create_method("simclr", "vit_nano", dino_out_dim=64)
