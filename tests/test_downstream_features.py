"""Feature extraction and its cache: keyed by backbone and split, equal to a fresh extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import config
from osf.backbone.vit1d_cls import create_backbone
from osf.datasets.channelset import ChannelSet
from osf.downstream.features import (
    FeatureSet,
    backbone_hash,
    cache_key,
    cached_features,
    encode,
    extract_features,
    pooled_width,
    split_hash,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _loader(n=10, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, 1920, generator=g)
    mask = torch.ones(n, 12, dtype=torch.bool)
    mask[0, config.CHANNEL_INDEX["ECG"]] = False
    x[0, config.CHANNEL_INDEX["ECG"]] = 0.0
    return [
        {"signal": x[i : i + bs], "channel_mask": mask[i : i + bs], "label": torch.arange(i, min(i + bs, n)) % 3,
         "subject_id": [f"s{j // 4}" for j in range(i, min(i + bs, n))],
         "recording_id": [f"r{j // 4}" for j in range(i, min(i + bs, n))],
         "epoch_index": torch.arange(i, min(i + bs, n))}
        for i in range(0, n, bs)
    ]


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return create_backbone("vit_nano").eval()


def test_extraction_matches_backbone_and_keeps_epoch_identity(nano):
    loader = _loader()
    fs = extract_features(nano, loader, pooling="mean")
    assert fs.features.shape == (10, nano.width) and fs.features.dtype == np.float32
    x = torch.cat([b["signal"] for b in loader])
    m = torch.cat([b["channel_mask"] for b in loader])
    with torch.no_grad():
        _, patches = nano.forward_encoding(x, channel_mask=m)
    np.testing.assert_allclose(fs.features, patches.mean(1).numpy(), atol=1e-5)
    np.testing.assert_array_equal(fs.epoch_index, np.arange(10))
    assert fs.subject_ids.tolist()[:5] == ["s0"] * 4 + ["s1"]


def test_preset_zeroes_and_masks_and_equals_manually_zeroed_input(nano):
    loader = _loader(n=4)
    keep = config.CHANNEL_PRESETS["respiratory_only"]
    sig, mask = ChannelSet.from_names(keep).apply(loader[0]["signal"], loader[0]["channel_mask"])
    absent = [config.CHANNEL_INDEX[c] for c in config.CHANNELS if c not in keep]
    assert not mask[:, absent].any() and sig[:, absent].abs().sum() == 0
    assert torch.equal(sig[:, config.CHANNEL_INDEX["ABD"]], loader[0]["signal"][:, config.CHANNEL_INDEX["ABD"]])
    via_preset = extract_features(nano, loader, channels=keep).features
    manual = [dict(b, signal=b["signal"].clone()) for b in loader]
    for b in manual:
        b["signal"][:, absent] = 0.0
        b["channel_mask"] = b["channel_mask"].clone()
        b["channel_mask"][:, absent] = False
    np.testing.assert_allclose(via_preset, extract_features(nano, manual).features, atol=1e-6)
    assert not np.allclose(via_preset, extract_features(nano, loader).features)
    with pytest.raises(ValueError, match="empty channel set"):
        ChannelSet.from_names([]).apply(sig, mask)


def test_cache_hits_only_for_the_same_backbone_split_and_pooling(nano, tmp_path):
    loader = _loader()
    key = {"backbone_hash": backbone_hash(nano), "split_hash": split_hash(["r"] * 10, range(10), [0] * 10)}
    first, info1 = cached_features(tmp_path, key, nano, loader)
    second, info2 = cached_features(tmp_path, key, nano, loader)
    assert not info1.hit and info2.hit and info1.path == info2.path
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.subject_ids, second.subject_ids)
    _, info3 = cached_features(tmp_path, key, nano, loader, pooling="mean")
    _, info4 = cached_features(tmp_path, key, nano, loader, channels=["ECG"])
    assert not info3.hit and not info4.hit and len({info1.path, info3.path, info4.path}) == 3
    low, info5 = cached_features(tmp_path, key, nano, loader, autocast_dtype=torch.bfloat16)
    assert not info5.hit and info5.path != info1.path  # bf16 features never stand in for float32 ones
    assert not np.array_equal(low.features, first.features)
    with pytest.raises(ValueError, match="needs backbone_hash and split_hash"):
        cached_features(tmp_path, {"backbone_hash": "x"}, nano, loader)


def test_one_backbone_pass_caches_every_pooling_asked_for(nano, tmp_path, monkeypatch):
    loader = _loader()
    key = {"backbone_hash": backbone_hash(nano), "split_hash": split_hash(["r"] * 10, range(10), [0] * 10)}
    forward, passes = nano.forward_encoding, []
    monkeypatch.setattr(nano, "forward_encoding", lambda *a, **kw: passes.append(1) or forward(*a, **kw))
    cls, info = cached_features(tmp_path, key, nano, loader, pooling="cls", also_poolings=("mean", "groups"))
    assert not info.hit and len(passes) == len(loader)  # one pass over the loader for the three poolings
    # a single pooling's file name is unchanged: caches written before also_poolings stay valid
    assert info.path.name == f"features_{cache_key(dict(key, pooling='cls', channels='store', autocast='off'))}"
    mean, info_mean = cached_features(tmp_path, key, nano, loader, pooling="mean")
    assert info_mean.hit and len(passes) == len(loader)
    monkeypatch.undo()
    np.testing.assert_array_equal(mean.features, extract_features(nano, loader, pooling="mean").features)
    np.testing.assert_array_equal(cls.features, extract_features(nano, loader, pooling="cls").features)
    np.testing.assert_array_equal(mean.epoch_index, cls.epoch_index)
    groups, info_groups = cached_features(tmp_path, key, nano, loader, pooling="groups")
    assert info_groups.hit and groups.features.shape == (10, pooled_width(nano, "groups"))


def test_hashes_change_with_weights_and_epochs(nano):
    other = create_backbone("vit_nano")
    other.load_state_dict(nano.state_dict())
    assert backbone_hash(other) == backbone_hash(nano)
    with torch.no_grad():
        other.norm.weight[0] += 1e-3
    assert backbone_hash(other) != backbone_hash(nano)
    a = split_hash(["r1", "r1"], [0, 1], [0, 1])
    assert a == split_hash(["r1", "r1"], [0, 1], [0, 1])
    assert a != split_hash(["r1", "r1"], [0, 1], [0, 2]) and a != split_hash(["r1", "r2"], [0, 1], [0, 1])


def test_corrupt_cache_file_is_reported(tmp_path):
    bad = tmp_path / "features_x.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="features_x.npz is unreadable"):
        FeatureSet.load(bad)


class _Batches(torch.utils.data.Dataset):
    """The batches of ``_loader`` as a map-style dataset, for a real DataLoader (sampler of known length)."""

    def __init__(self, n=10):
        self.items = [{k: v[0] if torch.is_tensor(v) else v for k, v in b.items()} for b in _loader(n, 1)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _collate(items):
    out = torch.utils.data.default_collate([{k: v for k, v in it.items() if not k.endswith("_id")} for it in items])
    for key in ("subject_id", "recording_id"):
        out[key] = [it[key][0] for it in items]
    return out


def test_cache_is_written_into_a_preallocated_file_and_read_lazily(nano, tmp_path):
    loader = torch.utils.data.DataLoader(_Batches(10), batch_size=4, collate_fn=_collate)
    key = {"backbone_hash": backbone_hash(nano), "split_hash": "x"}
    fresh = extract_features(nano, loader, pooling="groups")
    assert isinstance(fresh.features, np.ndarray) and not isinstance(fresh.features, np.memmap)
    cached, info = cached_features(tmp_path, key, nano, loader, pooling="groups", also_poolings=("mean",))
    assert not info.hit and sorted(p.name for p in info.path.iterdir()) == sorted(
        f"{k}.npy" for k in ("features", "labels", "subject_ids", "recording_ids", "epoch_index"))
    assert not list(tmp_path.glob(".*tmp"))  # the staging folders are gone
    for hit in (cached, cached_features(tmp_path, key, nano, loader, pooling="groups")[0]):
        assert isinstance(hit.features, np.memmap) and hit.features.shape == (10, pooled_width(nano, "groups"))
        np.testing.assert_allclose(hit.features, fresh.features, atol=1e-6)
        assert hit.recording_ids.tolist() == fresh.recording_ids.tolist() == [f"r{j // 4}" for j in range(10)]
    mean, mean_info = cached_features(tmp_path, key, nano, loader, pooling="mean")
    assert mean_info.hit
    np.testing.assert_allclose(mean.features, extract_features(nano, loader, pooling="mean").features, atol=1e-6)


def test_truncated_cache_folder_is_reported(tmp_path):
    folder = tmp_path / "features_f"
    FeatureSet(np.zeros((50, 8), np.float32), np.zeros(50, np.int64), np.array(["s"] * 50), np.array(["r"] * 50),
               np.arange(50)).save(folder)
    data = (folder / "features.npy").read_bytes()
    (folder / "features.npy").write_bytes(data[:-200])  # e.g. an interrupted copy of the cache folder
    with pytest.raises(ValueError, match="features_f is unreadable or incomplete"):
        FeatureSet.load(folder)


def test_groups_pooling_is_the_mean_of_each_channel_groups_tokens(nano):
    x = torch.randn(3, 12, 1920, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 12, dtype=torch.bool)
    with torch.no_grad():
        pooled = encode(nano, x, mask, "groups")
        _, patches = nano.forward_encoding(x, channel_mask=mask)
    assert pooled.shape == (3, pooled_width(nano, "groups")) == (3, 3 * nano.width)
    per_group = nano.num_time_patches
    for g in range(nano.num_groups):  # group-major tokens: group g holds tokens g*30 .. g*30+29
        expected = patches[:, g * per_group : (g + 1) * per_group].mean(1)
        torch.testing.assert_close(pooled[:, g * nano.width : (g + 1) * nano.width], expected)
    with torch.no_grad():
        torch.testing.assert_close(encode(nano, x, mask, "mean"), patches.mean(1))
    assert pooled_width(nano, "cls") == pooled_width(nano, "mean") == nano.width
    with torch.no_grad():
        both = encode(nano, x, mask, "cls_groups")
        cls = encode(nano, x, mask, "cls")
    assert both.shape == (3, pooled_width(nano, "cls_groups")) == (3, 4 * nano.width)
    torch.testing.assert_close(both, torch.cat([cls, pooled], dim=1))


def test_groups_std_adds_the_spread_of_each_groups_tokens_over_the_epoch(nano):
    x = torch.randn(2, 12, 1920, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        pooled = encode(nano, x, mask, "groups_std")
        _, patches = nano.forward_encoding(x, channel_mask=mask)
    width, t = nano.width, nano.num_time_patches
    assert pooled.shape == (2, pooled_width(nano, "groups_std")) == (2, 6 * width)
    torch.testing.assert_close(pooled[:, : 3 * width], encode(nano, x, mask, "groups"))
    for g in range(nano.num_groups):
        tokens = patches[:, g * t : (g + 1) * t].numpy()
        np.testing.assert_allclose(pooled[:, (3 + g) * width : (4 + g) * width].numpy(), tokens.std(1), rtol=1e-4, atol=1e-5)


def test_unknown_pooling_is_refused_with_the_choices(nano):
    with pytest.raises(ValueError, match=r"unknown pooling 'max'; choose one of \['cls', 'mean', 'groups', 'cls_groups', 'groups_std'\]"):
        pooled_width(nano, "max")
