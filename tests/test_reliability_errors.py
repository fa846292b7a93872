"""Clear one-line errors instead of tracebacks: a refused resume checkpoint, a classifier with wrong
head shapes (before the night is read), an export from a wrong-shape checkpoint, one failing --edf."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import config

REPO = Path(__file__).resolve().parents[1]
from main_pipelines import main_export, main_predict, main_preprocess, main_pretrain


def test_resume_from_a_checkpoint_the_safe_loader_refuses(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=1.0)}, ckpt)  # a pickled object
    with pytest.raises(SystemExit) as exit_:
        main_pretrain.main(["--data_dir", str(tmp_path / "store"), "--ckpt_path", str(ckpt)])
    message = str(exit_.value.code)
    assert message.startswith(f"main_pretrain: cannot resume from {ckpt}: ") and "\n" not in message
    assert "argparse.Namespace" in message and "weights_only=False" not in message
    assert not (tmp_path / "store").exists() and list(tmp_path.iterdir()) == [ckpt]  # nothing was set up

    with pytest.raises(SystemExit, match="cannot resume from .*nope.ckpt: file not found"):
        main_pretrain.main(["--data_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "nope.ckpt")])
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    with pytest.raises(SystemExit, match=r"junk\.ckpt: not a readable torch checkpoint"):
        main_pretrain.main(["--data_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "junk.ckpt")])


def _classifier_file(path: Path, head_in: int | None = None, stage_out: int = 4, event_out: int = 2) -> Path:
    from osf.backbone.checkpoint import backbone_metadata
    from osf.backbone.vit1d_cls import create_backbone
    from osf.downstream.classifier import SleepClassifier, save_classifier

    backbone = create_backbone("vit_nano")
    width = head_in or backbone.width
    heads = {"stage": torch.nn.Linear(width, stage_out), "arousal": torch.nn.Linear(backbone.width, event_out)}
    names = {"stage": list(config.STAGE_NAMES_4), "arousal": [f"c{i}" for i in range(event_out)]}
    clf = SleepClassifier(backbone, heads, names, backbone_metadata=backbone_metadata(backbone, "random"))
    return save_classifier(clf, path)


def _corrupt(path: Path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def _two_names(payload: dict) -> None:
    payload["label_names"]["arousal"] = ["absent", "present"]


def _short_bias(payload: dict) -> None:
    payload["heads"]["stage"]["bias"] = payload["heads"]["stage"]["bias"][:2]


@pytest.mark.parametrize(
    ("kwargs", "edit", "message"),
    [
        ({"head_in": 7}, None, r"head 'stage' takes 7 features but its backbone gives \d+"),
        ({"event_out": 3}, None, r"event head 'arousal' has 3 classes; event heads must be binary"),
        ({"event_out": 3}, _two_names, r"task 'arousal': head has 3 outputs but 2 label names"),
        ({}, _short_bias, r"size mismatch for bias: .*torch.Size\(\[2\]\)"),
    ],
    ids=["head_input_width", "event_head_not_binary", "head_vs_label_names", "bias_shape"],
)
def test_predict_refuses_a_classifier_with_wrong_head_shapes_before_reading_the_night(
    tmp_path: Path, monkeypatch, capsys, kwargs, edit, message
) -> None:
    from osf.datasets import preprocess

    clf = _classifier_file(tmp_path / "clf.pt", **kwargs)
    if edit is not None:
        _corrupt(clf, edit)

    def never(*args, **kwargs):
        raise AssertionError("the night was read before the classifier was checked")

    monkeypatch.setattr(preprocess, "process_recording", never)
    out = tmp_path / "out"
    code = main_predict.main(["--edf", str(tmp_path / "night.edf"), "--classifier", str(clf), "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: classifier file {clf}: ") and re.search(message, err)
    assert not out.exists()


def test_export_from_a_checkpoint_of_the_wrong_shape(tmp_path: Path) -> None:
    from osf.backbone.vit1d_cls import create_backbone

    state = {f"backbone.{k}": v for k, v in create_backbone("vit_nano").state_dict().items()}
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "osf": {"method": "mae", "backbone_name": "vit_nano", "backbone_kwargs": {}}}, ckpt)
    output = tmp_path / "out" / "backbone.pth"
    with pytest.raises(SystemExit) as exit_:
        main_export.main(["--ckpt_path", str(ckpt), "--output", str(output)])
    message = str(exit_.value.code)
    assert message.startswith(f"main_export: {ckpt}: its weights do not fit the backbone it names: 1 tensors")
    assert key.removeprefix("backbone.") in message and "\n" not in message and "nothing was written" in message
    assert not output.parent.exists()


def test_a_single_failing_edf_shows_its_reason(write_test_edf, tmp_path: Path, capsys) -> None:
    edf = write_test_edf(tmp_path / "night.edf", {"C4-M1": (np.random.default_rng(0).standard_normal(90 * 128), 128)})
    edf.write_bytes(edf.read_bytes()[:-700])  # truncated copy
    code = main_preprocess.main(["--dataset", "generic", "--edf", str(edf), "--output_dir", str(tmp_path / "store"),
                                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot finalize the store" in err and f"why: {edf}: truncated" in err
