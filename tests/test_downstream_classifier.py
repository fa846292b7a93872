"""Classifier file: weights-only round trip, merging heads, channel contract; backbone loading from every format."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import config
from osf.backbone.checkpoint import CheckpointError, backbone_metadata, save_backbone
from osf.backbone.vit1d_cls import create_backbone
from osf.downstream.classifier import SleepClassifier, load_classifier, merge_classifiers, save_classifier
from osf.downstream.loading import load_any_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nano() -> nn.Module:
    torch.manual_seed(0)
    return create_backbone("vit_nano").eval()


def _clf(backbone, task="stage", names=("W", "Light", "Deep", "REM"), channels=config.CHANNELS, seed=0, pooling="cls"):
    torch.manual_seed(seed)
    return SleepClassifier(backbone, {task: nn.Linear(backbone.width, len(names))}, {task: list(names)},
                           pooling=pooling, channels=channels, backbone_metadata=backbone_metadata(backbone, "test"),
                           thresholds={task: 0.3} if len(names) == 2 else None)


def _batch(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, 1920, generator=g), torch.ones(n, 12, dtype=torch.bool)


def test_classifier_round_trip_is_weights_only_and_complete(nano, tmp_path):
    clf = _clf(nano, pooling="mean")
    path = save_classifier(clf, tmp_path / "classifier.pt")
    raw = torch.load(path, weights_only=True)  # plain tensors and python types only
    assert raw["label_names"] == {"stage": ["W", "Light", "Deep", "REM"]}
    assert raw["pooling"] == "mean" and raw["channels"] == list(config.CHANNELS)
    assert raw["backbone_metadata"]["encoder_name"] == "vit_nano"
    loaded = load_classifier(path)
    x, m = _batch()
    torch.testing.assert_close(loaded.predict_proba(x, m)["stage"], clf.predict_proba(x, m)["stage"])
    assert not list(tmp_path.glob("*.tmp"))


def test_merge_classifiers_predicts_every_task_with_one_backbone(nano, tmp_path):
    stage = _clf(nano)
    arousal = _clf(nano, task="arousal", names=("No Arousal", "Arousal"), seed=1)
    merged = merge_classifiers([stage, arousal])
    assert merged.tasks == ["stage", "arousal"] and merged.thresholds == {"arousal": 0.3}
    x, m = _batch()
    out = load_classifier(save_classifier(merged, tmp_path / "both.pt")).predict_proba(x, m)
    torch.testing.assert_close(out["stage"], stage.predict_proba(x, m)["stage"])
    torch.testing.assert_close(out["arousal"], arousal.predict_proba(x, m)["arousal"])


def test_merge_refuses_different_backbones_and_duplicate_tasks(nano):
    other = create_backbone("vit_nano")
    with pytest.raises(ValueError, match="different backbone"):
        merge_classifiers([_clf(nano), _clf(other, task="arousal", names=("n", "y"))])
    with pytest.raises(ValueError, match="more than one classifier"):
        merge_classifiers([_clf(nano), _clf(nano)])


def test_channel_contract_hides_channels_not_seen_in_training(nano):
    clf = _clf(nano, channels=config.CHANNEL_PRESETS["eeg_eog_only"])
    x, m = _batch()
    x2 = x.clone()
    x2[:, config.CHANNEL_INDEX["ECG"]] += 5.0  # outside the contract: must not matter
    torch.testing.assert_close(clf.predict_proba(x, m)["stage"], clf.predict_proba(x2, m)["stage"])
    x3 = x.clone()
    x3[:, config.CHANNEL_INDEX["EEG_C3_A2"]] += 5.0
    assert not torch.allclose(clf.predict_proba(x, m)["stage"], clf.predict_proba(x3, m)["stage"])
    m[:, config.CHANNEL_INDEX["EEG_C4_A1"]] = False
    assert clf.missing_channels(m) == ["EEG_C4_A1"]


def test_load_classifier_rejects_other_files(nano, tmp_path):
    path = tmp_path / "bb.pth"
    save_backbone(nano, path)
    with pytest.raises(CheckpointError, match="not an OSF classifier"):
        load_classifier(path)
    payload = torch.load(save_classifier(_clf(nano), tmp_path / "full.pt"), weights_only=True)
    del payload["heads"]
    torch.save(payload, tmp_path / "headless.pt")
    with pytest.raises(CheckpointError, match=r"headless.pt: classifier file lacks \['heads'\]"):
        load_classifier(tmp_path / "headless.pt")


# --- backbone sources -------------------------------------------------------------------------
def test_pth_safetensors_and_random_init_load_the_same_architecture(nano, tmp_path):
    pth, st = save_backbone(nano, tmp_path / "osf_backbone.pth", backbone_metadata(nano, "dino"))
    x, m = _batch(2)
    ref = nano(x, channel_mask=m)
    hashes = set()
    for path in (pth, st):
        model, meta, h = load_any_backbone(str(path))
        torch.testing.assert_close(model(x, channel_mask=m), ref)
        assert meta["model_name"] == "dino"
        hashes.add(h)
    assert len(hashes) == 2  # file hashes of two different files
    rnd, rnd_meta, h = load_any_backbone("none", psg_encoder_name="vit_nano")
    assert h == "random_init" and rnd_meta["encoder_name"] == "vit_nano"
    assert rnd.state_dict().keys() == nano.state_dict().keys()


def test_released_reference_backbone_loads(shared_dir):
    model, meta, _ = load_any_backbone(str(shared_dir / "fixtures/osf_compat/vit_nano_lead_wise1_backbone.pth"))
    assert meta["encoder_name"] == "vit_nano" and meta["lead_wise"] == 1
    io = torch.load(shared_dir / "fixtures/osf_compat/vit_nano_lead_wise1_io.pt", weights_only=True)
    cls, _ = model.forward_encoding(io["x"])
    torch.testing.assert_close(cls, io["cls"], atol=1e-4, rtol=1e-4)


def test_wrong_architecture_or_channel_contract_is_refused(nano, tmp_path):
    pth, _ = save_backbone(nano, tmp_path / "nano.pth")
    with pytest.raises(CheckpointError, match="psg_encoder_name='vit_base'"):
        load_any_backbone(str(pth), psg_encoder_name="vit_base")
    eight = create_backbone("vit_nano", num_leads=8)
    pth8, _ = save_backbone(eight, tmp_path / "eight.pth")
    with pytest.raises(CheckpointError, match="channel contract mismatch: num_leads=8"):
        load_any_backbone(str(pth8))
    meta = backbone_metadata(nano, "x", channels=list(reversed(config.CHANNELS)))
    pth_rev, _ = save_backbone(nano, tmp_path / "rev.pth", meta)
    with pytest.raises(CheckpointError, match="differ from the OSF contract"):
        load_any_backbone(str(pth_rev))
    with pytest.raises(ValueError, match="needs --psg_encoder_name"):
        load_any_backbone("none")
    with pytest.raises(CheckpointError, match="file not found"):
        load_any_backbone(str(tmp_path / "missing.pth"))


def test_random_init_baseline_is_one_network_per_seed_and_leaves_the_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _, _ = load_any_backbone("none", psg_encoder_name="vit_nano", seed=3)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is untouched
    b, _, _ = load_any_backbone("none", psg_encoder_name="vit_nano", seed=3)
    c, _, _ = load_any_backbone("none", psg_encoder_name="vit_nano", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["to_patch_embedding.weight"], sc["to_patch_embedding.weight"])
