"""Backbones by name (``hf://org/repo[@rev]/file``) through huggingface_hub's cache, offline.

The cache is laid out exactly as ``hf_hub_download`` lays it out (``models--org--repo/`` with
``blobs/<sha256>``, ``refs/<branch>`` holding a commit and ``snapshots/<commit>/<file>`` symlinks
into ``blobs``), and ``HF_HUB_OFFLINE`` is on, so nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("huggingface_hub")
from huggingface_hub import constants as hub_constants

from osf.backbone import CheckpointError, backbone_metadata, load_backbone, save_backbone, vit_nano
from osf.backbone.hub import HubFile, parse_hub_uri, resolve_hub_file
from osf.downstream.loading import file_hash, load_any_backbone

REPO = "yang-ai-lab/OSF-Base"
URI = f"hf://{REPO}/osf_backbone.pth"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
ROOT = Path(__file__).resolve().parents[1]


class NotATensor:
    """A custom class: a checkpoint pickling it must be refused by the safe loader."""


def add_to_hub_cache(cache: Path, repo_id: str, commit: str, files: dict[str, Path], refs: tuple[str, ...] = ()) -> None:
    """Place ``files`` in ``cache`` as huggingface_hub does: content-addressed blobs, snapshot symlinks, refs."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()  # LFS files are stored under their sha256
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    for ref in refs:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)  # the hub client writes the bare commit, no newline


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, with huggingface_hub pointed at it and offline (env for subprocesses too)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables at import time; this process imported it already.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return vit_nano(lead_wise=1).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two different vit_nano backbones, each saved as .pth + .safetensors."""
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        model = _model(seed)
        out[name] = save_backbone(model, folder / name / "osf_backbone.pth", backbone_metadata(model, "osf"))
    return out


def _same_weights(m1: torch.nn.Module, m2: torch.nn.Module) -> bool:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_parse_hub_uri():
    assert parse_hub_uri(URI) == HubFile(REPO, "osf_backbone.pth", None)
    assert parse_hub_uri(f"hf://models/{REPO}@v1.0/sub/dir/w.safetensors") == HubFile(REPO, "sub/dir/w.safetensors", "v1.0")
    assert parse_hub_uri(f"hf://{REPO}@refs/pr/3/osf_backbone.pth") == HubFile(REPO, "osf_backbone.pth", "refs/pr/3")
    assert parse_hub_uri(f"hf://{REPO}@{COMMIT_A}/osf_backbone.pth").uri == f"hf://{REPO}@{COMMIT_A}/osf_backbone.pth"
    assert HubFile(REPO, "osf_backbone.pth").candidates() == ["osf_backbone.safetensors", "osf_backbone.pth"]
    assert HubFile(REPO, "x.ckpt").candidates() == ["x.ckpt"]
    for bad, fragment in ((f"hf://{REPO}", "expected hf://org/repo"), ("hf://datasets/org/data/x.pth", "model repositories"),
                          (f"hf://{REPO}@/x.pth", "expected hf://org/repo")):
        with pytest.raises(CheckpointError, match=fragment) as info:
            parse_hub_uri(bad)
        assert bad in str(info.value)


def test_pth_only_repo_loads_like_the_local_file(offline_cache, exported):
    pth, _ = exported["a"]
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": pth}, refs=("main",))
    model, metadata = load_backbone(URI)
    local, local_meta = load_backbone(pth)
    assert metadata == local_meta and _same_weights(model, local)
    assert resolve_hub_file(URI) == offline_cache / f"models--yang-ai-lab--OSF-Base/snapshots/{COMMIT_A}/osf_backbone.pth"


def test_safetensors_twin_preferred(offline_cache, exported):
    pth, st = exported["a"]
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": pth, "osf_backbone.safetensors": st},
                     refs=("main",))
    assert resolve_hub_file(URI).name == "osf_backbone.safetensors"
    model, metadata, ckpt_hash = load_any_backbone(URI)
    assert ckpt_hash == file_hash(st)  # the file actually loaded
    assert _same_weights(model, load_backbone(pth)[0]) and metadata["encoder_name"] == "vit_nano"


def test_revision_pinning(offline_cache, exported):
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": exported["a"][0]}, refs=("v1",))
    add_to_hub_cache(offline_cache, REPO, COMMIT_B, {"osf_backbone.pth": exported["b"][0]}, refs=("main",))
    snapshots = offline_cache / "models--yang-ai-lab--OSF-Base" / "snapshots"
    assert resolve_hub_file(URI) == snapshots / COMMIT_B / "osf_backbone.pth"  # main -> B
    assert resolve_hub_file(f"hf://{REPO}@v1/osf_backbone.pth") == snapshots / COMMIT_A / "osf_backbone.pth"  # tag
    pinned = load_backbone(f"hf://{REPO}@{COMMIT_A}/osf_backbone.pth")[0]  # commit -> A's weights, not B's
    assert _same_weights(pinned, load_backbone(exported["a"][0])[0])
    assert not _same_weights(pinned, load_backbone(exported["b"][0])[0])


def test_not_cached_offline_names_the_uri(offline_cache, exported):
    with pytest.raises(CheckpointError) as info:
        load_backbone(URI)
    message = str(info.value)
    assert message.startswith(f"backbone checkpoint {URI}: not in the Hugging Face cache {offline_cache}"), message
    assert "HF_HUB_OFFLINE=1" in message and f"hf download {REPO} osf_backbone.pth" in message
    # a cached repository without the requested revision is just as clear
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": exported["a"][0]}, refs=("main",))
    with pytest.raises(CheckpointError, match="at revision 'v9'") as info:
        load_any_backbone(f"hf://{REPO}@v9/osf_backbone.pth")
    assert f"hf://{REPO}@v9/osf_backbone.pth" in str(info.value)


def test_hub_file_gets_the_local_checks(offline_cache, tmp_path):
    model = _model(0)
    bad_meta = tmp_path / "wrong.pth"
    torch.save({"state_dict": model.state_dict(), "metadata": {"encoder_name": "vit_nano"}}, bad_meta)
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": bad_meta}, refs=("main",))
    with pytest.raises(CheckpointError) as info:
        load_backbone(URI)
    message = str(info.value)
    assert message.startswith(f"backbone checkpoint {URI}: metadata is missing"), message
    assert f"snapshots/{COMMIT_A}/osf_backbone.pth" in message  # and where the cached copy is


@pytest.mark.parametrize("via_hub", [False, True])
def test_refused_pickle_names_the_global(offline_cache, tmp_path, via_hub):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _model(0).state_dict(), "metadata": {}, "extra": NotATensor()}, path)
    if via_hub:
        add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.pth": path}, refs=("main",))
    with pytest.raises(CheckpointError) as info:
        load_backbone(URI if via_hub else path)
    message = str(info.value)
    assert f"{__name__}.NotATensor" in message and "not a plain-tensor checkpoint" in message, message
    assert (URI if via_hub else str(path)) in message
    for advice in ("weights_only` set to `False`", "add_safe_globals", "safe_globals", "trust"):
        assert advice not in message, message
    assert "\n" not in message


@pytest.mark.slow  # a fresh interpreter importing torch: ~10 s on a loaded machine
def test_environment_variables_in_a_fresh_process(offline_cache, exported):
    # HF_HUB_CACHE / HF_HUB_OFFLINE as a user sets them, read by a process that imports huggingface_hub anew.
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.safetensors": exported["a"][1]}, refs=("main",))
    code = (f"from osf.backbone import load_backbone; m, meta = load_backbone({URI!r}); "
            "print(meta['encoder_name'], sum(p.numel() for p in m.parameters()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    n_params = sum(p.numel() for p in load_backbone(exported["a"][1])[0].parameters())
    assert done.stdout.split() == ["vit_nano", str(n_params)]


def _main_finetune():
    from main_pipelines import main_finetune

    return main_finetune


def _finetune_argv(store: Path, out: Path) -> list[str]:
    return ["--data_dir", str(store), "--output_dir", str(out), "--ckpt_path", URI, "--max_steps", "2",
            "--eval_every", "1", "--batch_size", "16", "--n_boot", "0", "--accelerator", "cpu",
            "--feature_cache_dir", "off"]


def test_main_finetune_names_an_uncached_hf_ckpt_path(offline_cache, tiny_store, tmp_path, capsys):
    assert _main_finetune().main(_finetune_argv(tiny_store, tmp_path / "out")) == 2
    assert f"main_finetune.py: error: backbone checkpoint {URI}: not in the Hugging Face cache" in capsys.readouterr().err


@pytest.mark.slow
def test_main_finetune_takes_an_hf_ckpt_path(offline_cache, exported, tmp_path, capsys):
    from osf.testing import make_random_store

    store = make_random_store(tmp_path / "store", n_subjects=6, n_epochs=8, seed=0, split_fractions=(0.5, 0.25, 0.25))
    add_to_hub_cache(offline_cache, REPO, COMMIT_A, {"osf_backbone.safetensors": exported["a"][1]}, refs=("main",))
    assert _main_finetune().main(_finetune_argv(store, tmp_path / "out")) == 0, capsys.readouterr().err
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["config"]["ckpt_path"] == URI and record["ckpt_hash"] == file_hash(exported["a"][1])
