"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OSF_SHARED_DIR", REPO_ROOT.parent / "shared"))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def one_thread():
    """Torch single-threaded for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models
    gain nothing from threads, and on a shared 2-core machine two threads per test process oversubscribe badly."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder; tests using it skip when it is absent (users' machines)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A finalized epoch store: 6 subjects x 40 epochs of label-correlated random signals (dataset "synth").

    Subject s000 has two visits, s001 has no EEG. Built with `osf.testing.make_random_store`.
    Read-only for tests: build your own with `make_random_store` if you need to modify one.
    """
    from osf.testing import make_random_store

    return make_random_store(tmp_path_factory.mktemp("tiny_store") / "store", n_subjects=6, n_epochs=40, seed=0)


@pytest.fixture(scope="session")
def write_test_edf():
    """Write a small EDF: ``write(path, {label: (samples, rate_hz)}, record_s=1.0) -> path``.

    Each signal's physical range is its own min/max (widened when constant), so values round-trip
    to within one 16-bit digital step. Used by the preprocessing and ingestion tests.
    """
    import edfio
    import numpy as np

    def write(path: Path, signals: dict, record_s: float = 1.0) -> Path:
        edf_signals = []
        for label, (x, rate) in signals.items():
            x = np.asarray(x, dtype=np.float64)
            finite = x[np.isfinite(x)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
            if hi - lo < 1e-6:
                lo, hi = lo - 1.0, hi + 1.0
            edf_signals.append(
                edfio.EdfSignal(np.nan_to_num(x, nan=lo), sampling_frequency=rate, label=label,
                                physical_dimension="uV", physical_range=(lo, hi))
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        edfio.Edf(edf_signals, data_record_duration=record_s).write(path)
        return path

    return write
