"""The epoch store at NSRR scale, simulated: open/set-up, memory, handles, cold reads, sampler (issue 27).

Builds stores with the real layout (per-recording float16 ``.npy`` arrays with real headers but
sparse, i.e. holes read as zeros; the index and manifest as ``StoreWriter.finalize`` writes them)
at 10^4 .. 2x10^6 epochs (2x10^7 with ``--largest``), 10 cohorts, ~1,000 epochs per recording,
~5 KB of QC provenance per recording. Each size is measured in a fresh process:

* open + set-up: ``EpochStore`` + ``SleepDataModule(task="pretrain").setup()`` seconds, main RSS
  after it and its peak (``/proc/self/status`` VmRSS / VmHWM);
* sampler start-up: building rank 0's ``TrainSampler`` of 64 and drawing its first item;
* a worker: one DataLoader worker (fork) over ``--batches`` shuffled training batches; its private
  memory (``/proc/<pid>/smaps_rollup`` Private_Clean + Private_Dirty) and open handles
  (``/proc/<pid>/fd``), sampled every 50 batches, last and largest;
* warm and cold samples/s of ``EpochStore.read`` (batches of 256 random rows): cold after
  ``POSIX_FADV_DONTNEED`` on every array file (no root needed), warm on re-reading the same rows;
* downstream set-up: ``SleepDataModule(task="downstream", eval_label="Stage").setup()`` seconds.

``--old_code /path/to/old/checkout`` measures the code before issue 27 on format-1 stores of the
same sizes up to ``--old_max`` (it needs ~13 GB at 2x10^7: do not go there on a shared machine).
``--compare_readers N`` times three readers at N epochs, cold and warm, to decide the read path:
a cached map per file (the old reader), an LRU of 16 maps with ``MADV_RANDOM``, and ``preadv``
through 16 handles (the store's reader).

    python benchmarks/bench_store_scale.py --root /tmp/i27_scale [--largest] [--old_code /work/main]
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
COHORTS = ("shhs", "chat", "mros", "ccshs", "cfs", "mesa", "sof", "wsc", "stages", "nchsdb")
SIZES = (10_000, 100_000, 1_000_000, 2_000_000)
LARGEST = 20_000_000
SHAPE = (12, 1920)
EPOCH_BYTES = 12 * 1920 * 2


# --- building simulated stores -----------------------------------------------------------------------
def _lengths(n_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """Recording lengths ~U(800, 1200) summing to exactly n_epochs."""
    n_rec = max(1, round(n_epochs / 1000))
    lengths = rng.integers(800, 1201, n_rec)
    lengths = np.maximum(1, np.round(lengths * n_epochs / lengths.sum())).astype(np.int64)
    lengths[-1] += n_epochs - lengths.sum()
    return lengths


def _qc(rng: np.random.Generator) -> dict:
    """A QC record of about the size ingestion writes (~5 KB per recording)."""
    from osf import config

    per_channel = {c: {"median": float(rng.normal()), "iqr": float(rng.random()), "flat_frac": 0.0,
                       "clipped_frac": float(rng.random() / 100), "source_label": f"{c} label", "rate_hz": 256.0,
                       "filter": "bandpass 0.3-35 Hz", "units": "uV"} for c in config.CHANNELS}
    return {"present_channels": list(config.CHANNELS), "per_channel": per_channel, "warnings": [],
            "scoring": {"labelled": True, "events": int(rng.integers(100, 900)), "format": "nsrr-xml"}}


def _write_sparse_array(path: Path, n: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f2", "fortran_order": False, "shape": (n, *SHAPE)})
        fh.truncate(fh.tell() + n * EPOCH_BYTES)
    return path


def _recordings(root: Path, n_epochs: int, seed: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = _lengths(n_epochs, rng)
    datasets = np.array(COHORTS)[np.arange(lengths.size) % len(COHORTS)]
    order = np.lexsort((np.arange(lengths.size), datasets))
    datasets = datasets[order]
    rids = [f"{d}-{i:06d}" for i, d in enumerate(datasets)]
    subjects = [f"{d}-s{i // 2 if i % 5 == 0 else i:06d}" for i, d in enumerate(datasets)]  # some second visits
    paths = [f"signals/{d}/{r}.npy" for d, r in zip(datasets, rids)]
    for p, n in zip(paths, lengths):
        _write_sparse_array(root / p, int(n))
    return pd.DataFrame({"dataset": datasets, "recording_id": rids, "subject_id": subjects,
                         "visit": 1, "path": paths, "n_epochs": lengths}), rng


def _columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from osf.datasets.recording import LABEL_FIELDS, QUALITY_FIELDS

    cols = {c: rng.integers(-1, 2, n, dtype=np.int8) for c in LABEL_FIELDS}
    cols["stage"] = rng.integers(-1, 5, n, dtype=np.int8)
    cols["channel_mask"] = np.full(n, 0x0FFF, np.uint16)
    cols.update({c: np.zeros(n, dtype=d) for c, d in QUALITY_FIELDS.items()})
    return cols


def _manifest(recs, n_epochs: int, fmt: int, qcs: list) -> dict:
    from osf import config

    return {"format_version": fmt, "created_at": "bench", "channels": list(config.CHANNELS),
            "sample_rate": config.SAMPLE_RATE, "epoch_samples": config.EPOCH_SAMPLES, "signal_dtype": "float16",
            "n_epochs": n_epochs, "n_recordings": len(recs), "splits": {"fractions": [0.8, 0.1, 0.1], "seed": 0},
            "cohort_groups": {d: "both" for d in COHORTS}, "cohort_groups_unused": [], "pipeline": [],
            "channel_maps": [], "unknown_event_names": {},
            **({"recordings": [
                {"dataset": r.dataset, "recording_id": r.recording_id, "subject_id": r.subject_id, "visit": 1,
                 "n_epochs": int(r.n_epochs), "duration_s": 30.0 * r.n_epochs, "source_path": f"/nsrr/{r.path}.edf",
                 "source": {"edf": f"/nsrr/{r.path}.edf", "sha256": {"edf": "0" * 64}}, "qc": q}
                for r, q in zip(recs.itertuples(), qcs)]} if fmt == 1 else {}),
            "excluded": []}


def build_store(root: Path, n_epochs: int, fmt: int = 2, seed: int = 0) -> Path:
    """A simulated store of ``n_epochs`` in format 2 (this code) or 1 (the code before issue 27)."""
    import pandas as pd

    from osf.datasets.splits import split_for_rows

    if root.exists():
        shutil.rmtree(root)
    recs, rng = _recordings(root, n_epochs, seed)
    recs["split"] = split_for_rows(recs["dataset"], recs["subject_id"])
    recs["cohort_group"] = "both"
    recs["start"] = np.r_[0, np.cumsum(recs["n_epochs"].to_numpy())[:-1]]
    qcs = [_qc(rng) for _ in range(len(recs))]
    cols = _columns(n_epochs, rng)
    cols["epoch_index"] = (np.arange(n_epochs) - np.repeat(recs["start"].to_numpy(), recs["n_epochs"])).astype(np.int32)
    if fmt == 2:
        from osf.datasets.store import INDEX_COLUMNS
        from osf.datasets.store_index import StoreIndex, write_index, write_index_parquet

        full = recs.assign(duration_s=30.0 * recs["n_epochs"], source_path=[f"/nsrr/{p}.edf" for p in recs["path"]],
                           source=[{"edf": f"/nsrr/{p}.edf", "sha256": {"edf": "0" * 64}} for p in recs["path"]],
                           qc=qcs)
        write_index(root, full, cols)
        write_index_parquet(root, StoreIndex(recs, cols, root / "index"), INDEX_COLUMNS)
    else:  # the format-1 index: one row per epoch, strings per row
        reps = recs["n_epochs"].to_numpy()
        frame = {k: np.repeat(recs[k].to_numpy(dtype=object), reps) for k in ("dataset", "recording_id", "subject_id")}
        frame["visit"] = np.ones(n_epochs, np.int16)
        frame.update(cols)
        for k in ("split", "cohort_group", "path"):
            frame[k] = np.repeat(recs[k].to_numpy(dtype=object), reps)
        frame["row"] = cols["epoch_index"]
        pd.DataFrame(frame).to_parquet(root / "index.parquet", index=False)
        del frame
    (root / "manifest.json").write_text(json.dumps(_manifest(recs, n_epochs, fmt, qcs), indent=2))
    return root


# --- /proc ----------------------------------------------------------------------------------------------
def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def private_mb(pid: int) -> float:
    """Private (clean + dirty) memory of a process, MB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def n_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def drop_cache(root: Path) -> None:
    """Evict the store's array files from the page cache (POSIX_FADV_DONTNEED; no root needed)."""
    for p in (root / "signals").glob("*/*.npy"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# --- one size, in a fresh process ----------------------------------------------------------------------
def measure(root: Path, batches: int, batch_size: int, read_batches: int) -> dict:
    """Everything for one store, in this process (run it in a fresh one)."""
    from osf.datasets.datamodule import SleepDataModule, TrainSampler
    from osf.datasets.store import EpochStore

    out: dict = {}
    t0 = time.perf_counter()
    store = EpochStore(root)
    out["open_s"] = time.perf_counter() - t0
    dm = SleepDataModule(root, task="pretrain", batch_size=batch_size, num_workers=1, seed=0)
    dm.store = store
    dm.setup()
    out["open_setup_s"] = time.perf_counter() - t0
    gc.collect()
    out["main_rss_mb"] = _status_kb("self", "VmRSS") / 1024
    out["main_peak_mb"] = _status_kb("self", "VmHWM") / 1024
    out["n_epochs"] = len(store)
    ds = dm.datasets["train"]

    t0 = time.perf_counter()
    sampler = TrainSampler(ds, num_replicas=64, rank=0, seed=0)
    next(iter(sampler))
    out["sampler_startup_s"] = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    rows = [rng.choice(len(store), 256, replace=False) for _ in range(read_batches)]
    drop_cache(root)
    cold_store = EpochStore(root)
    t0 = time.perf_counter()
    for r in rows:
        cold_store.read(r)
    out["cold_samples_s"] = 256 * read_batches / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for r in rows:
        cold_store.read(r)
    out["warm_samples_s"] = 256 * read_batches / (time.perf_counter() - t0)
    del cold_store

    torch.set_num_threads(1)
    loader = dm.train_dataloader()
    it = iter(loader)
    pid = it._workers[0].pid  # noqa: SLF001 - the worker process we measure
    fds, priv = [], []
    t0 = time.perf_counter()
    for k in range(batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            pid = it._workers[0].pid  # noqa: SLF001
        if k % 50 == 0 or k == batches - 1:
            fds.append(n_fds(pid))
            priv.append(private_mb(pid))
    out["worker_batches"] = batches
    out["worker_samples_s"] = batches * batch_size / (time.perf_counter() - t0)
    out["worker_private_mb_last"] = priv[-1]
    out["worker_private_mb_max"] = max(priv)
    out["worker_fds_max"] = max(fds)
    del it, loader

    t0 = time.perf_counter()
    down = SleepDataModule(root, task="downstream", eval_label="Stage", batch_size=batch_size, seed=0)
    down.store = store
    down.setup()
    out["downstream_setup_s"] = time.perf_counter() - t0
    from osf.downstream.inputs import dataset_split_hash

    t0 = time.perf_counter()  # what a downstream run hashes: every split with and without its labels
    for split in ("train", "val", "test"):
        dataset_split_hash(down, split)
        dataset_split_hash(down, split, with_labels=False)
    out["split_hashes_s"] = time.perf_counter() - t0
    out["main_peak_mb_end"] = _status_kb("self", "VmHWM") / 1024
    return out


def root_size(root: Path) -> int:
    """Epochs of a store folder this benchmark built (from its manifest)."""
    return int(json.loads((root / "manifest.json").read_text())["n_epochs"])


def run_measure(root: Path, code: Path, args: argparse.Namespace) -> dict:
    """``measure`` in a fresh interpreter importing ``osf`` from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    batches = args.batches if root_size(root) >= args.full_pass_from else min(args.batches, 500)
    cmd = [sys.executable, __file__, "--measure", str(root), "--batches", str(batches),
           "--batch_size", str(args.batch_size), "--read_batches", str(args.read_batches)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=str(code))
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- downstream: feature cache + linear probe ------------------------------------------------------------
class StandIn(torch.nn.Module):
    """A backbone of the real width whose features cost nothing to compute (deterministic noise per batch)."""

    def __init__(self, width: int = 768):
        super().__init__()
        self.width, self.num_groups = width, 1

    def forward_encoding(self, signal, return_sequence=False, channel_mask=None):
        g = torch.Generator().manual_seed(int(signal[0, 0, 0].item()))  # the batch's first row id
        cls = torch.randn(signal.shape[0], self.width, generator=g)
        return cls, cls[:, None]


class RowBatches:
    """A map-style dataset whose batch read returns what ``EpochDataset`` does, minus the signal."""

    def __init__(self, n: int, start: int = 0):
        self.n, self.start = n, start
        rng = np.random.default_rng(start)
        self.labels = rng.integers(0, 4, n)

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, idx):
        idx = np.asarray(idx)
        return {"signal": torch.from_numpy((idx + self.start).astype(np.float32))[:, None, None],
                "channel_mask": torch.ones(idx.size, 12, dtype=torch.bool), "label": torch.from_numpy(self.labels[idx]),
                "subject_id": [f"shhs-s{(i + self.start) // 2000:06d}" for i in idx.tolist()],
                "recording_id": [f"shhs-{(i + self.start) // 1000:06d}" for i in idx.tolist()],
                "epoch_index": torch.from_numpy((idx + self.start) % 1000)}


def measure_downstream(n: int, cache: Path, width: int = 768) -> dict:
    """Extract features of n epochs (train/val/test 80/10/10) through the cache, probe, predict; peak RSS."""
    from torch.utils.data import DataLoader, SequentialSampler

    from osf.downstream.features import cached_features

    try:
        from osf.downstream.epoch.linear_probe import predict_proba, train_linear_probe
    except ImportError:  # before the downstream split by level
        from osf.downstream.linear_probe import predict_proba, train_linear_probe

    torch.set_num_threads(1)
    sizes = {"train": int(n * 0.8), "val": n // 10, "test": n - int(n * 0.8) - n // 10}
    starts = {"train": 0, "val": sizes["train"], "test": sizes["train"] + sizes["val"]}
    out: dict = {"n_epochs": n, "width": width, "cache_mb": n * width * 4 / 2**20}
    t0 = time.perf_counter()
    feats = {}
    for split, size in sizes.items():
        ds = RowBatches(size, starts[split])
        loader = DataLoader(ds, batch_size=1024, sampler=SequentialSampler(ds), collate_fn=lambda b: b)
        feats[split], _ = cached_features(cache, {"backbone_hash": "standin", "split_hash": split}, StandIn(width),
                                          loader, pooling="cls")
    out["extract_s"] = time.perf_counter() - t0
    out["peak_after_extract_mb"] = _status_kb("self", "VmHWM") / 1024
    t0 = time.perf_counter()
    res = train_linear_probe(feats["train"].features, feats["train"].labels, feats["val"].features,
                             feats["val"].labels, 4, max_steps=500, batch_size=256, eval_every=100)
    predict_proba(res.head, feats["test"].features)
    out["probe_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _status_kb("self", "VmHWM") / 1024
    out["peak_over_cache"] = out["peak_rss_mb"] / out["cache_mb"]
    return out


def run_downstream(n: int, code: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, __file__, "--measure_downstream", str(n), "--root", str(cache)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=str(code))
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        return {"n_epochs": n, "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the three readers --------------------------------------------------------------------------------
class MapPerFile:
    """The old reader: one cached np.memmap per file, forever."""

    def __init__(self, root: Path, paths, starts):
        self.root, self.paths, self.starts, self.maps = root, paths, starts, {}

    def _map(self, fid: int):
        if fid not in self.maps:
            self.maps[fid] = np.load(self.root / self.paths[fid], mmap_mode="r")
        return self.maps[fid]

    def read(self, rows: np.ndarray) -> np.ndarray:
        fids = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((rows.size, *SHAPE), np.float32)
        for k, (f, r) in enumerate(zip(fids.tolist(), (rows - self.starts[fids]).tolist())):
            out[k] = self._map(f)[r]
        return out


class MapLRU(MapPerFile):
    """An LRU of 16 maps, each advised MADV_RANDOM (no readahead around a fault)."""

    def __init__(self, root: Path, paths, starts, size: int = 16):
        super().__init__(root, paths, starts)
        self.maps, self.size = OrderedDict(), size

    def _map(self, fid: int):
        if fid in self.maps:
            self.maps.move_to_end(fid)
            return self.maps[fid]
        while len(self.maps) >= self.size:
            self.maps.popitem(last=False)
        mm = np.load(self.root / self.paths[fid], mmap_mode="r")
        mm._mmap.madvise(mmap.MADV_RANDOM)  # noqa: SLF001 - np.memmap keeps the mmap object here
        self.maps[fid] = mm
        return mm


def compare_readers(root: Path, read_batches: int) -> list[dict]:
    """Cold and warm samples/s of the three readers on the same random rows."""
    from osf.datasets.store import EpochStore

    store = EpochStore(root)
    paths, starts = store.rows.paths, store.rows.start
    rng = np.random.default_rng(1)
    out = []
    for name, make in (("map per file (old)", lambda: MapPerFile(root, paths, starts)),
                       ("LRU of 16 maps + MADV_RANDOM", lambda: MapLRU(root, paths, starts)),
                       ("preadv, 16 handles (store)", lambda: EpochStore(root))):
        rows = [rng.choice(len(store), 256, replace=False) for _ in range(read_batches)]
        drop_cache(root)
        reader = make()
        rates = {}
        for phase in ("cold", "warm"):
            t0 = time.perf_counter()
            for r in rows:
                reader.read(r)
            rates[phase] = 256 * read_batches / (time.perf_counter() - t0)
        out.append({"reader": name, "cold_samples_s": rates["cold"], "warm_samples_s": rates["warm"],
                    "fds_after": n_fds(os.getpid())})
        del reader
        gc.collect()
    return out


# --- report ---------------------------------------------------------------------------------------------
COLUMNS = (("n_epochs", "epochs", "{:,}"), ("code", "code", "{}"), ("open_setup_s", "open+setup s", "{:.2f}"),
           ("main_rss_mb", "main RSS MB", "{:,.0f}"), ("main_peak_mb", "main peak MB", "{:,.0f}"),
           ("worker_private_mb_last", "worker private MB", "{:.0f}"), ("worker_fds_max", "worker fds", "{}"),
           ("cold_samples_s", "cold samples/s", "{:,.0f}"), ("warm_samples_s", "warm samples/s", "{:,.0f}"),
           ("sampler_startup_s", "sampler start s (64 ranks)", "{:.3f}"),
           ("downstream_setup_s", "downstream setup s", "{:.2f}"), ("split_hashes_s", "split hashes s", "{:.2f}"))


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n_epochs']:,} | {r['code']} | failed: {r['error']} |")
            continue
        lines.append("| " + " | ".join(fmt.format(r[k]) if k in r else "" for k, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def downstream_table(rows: list[dict]) -> str:
    lines = ["| epochs | code | cache MB | extract s | probe+predict s | peak RSS MB | peak / cache |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n_epochs']:,} | {r['code']} | failed: {r['error']} |")
            continue
        lines.append(f"| {r['n_epochs']:,} | {r['code']} | {r['cache_mb']:,.0f} | {r['extract_s']:.1f} | "
                     f"{r['probe_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['peak_over_cache']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/osf_store_scale"), help="scratch folder for the stores")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--largest", action="store_true", help=f"also {LARGEST:,} epochs (this code only)")
    ap.add_argument("--old_code", type=Path, help="checkout of the code before issue 27, measured on format-1 stores")
    ap.add_argument("--old_max", type=int, default=2_000_000, help="largest size for --old_code")
    ap.add_argument("--batches", type=int, default=2000, help="batches the worker reads (500 below --full_pass_from)")
    ap.add_argument("--full_pass_from", type=int, default=2_000_000, help="sizes that get all --batches")
    ap.add_argument("--downstream", type=int, nargs="*", default=[], help="feature cache + probe at these sizes")
    ap.add_argument("--downstream_old", type=int, nargs="*", default=[], help="the same with --old_code")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--read_batches", type=int, default=20, help="batches of 256 rows for cold/warm samples/s")
    ap.add_argument("--compare_readers", type=int, default=0, metavar="N", help="time the three readers at N epochs")
    ap.add_argument("--downstream_only", action="store_true", help="skip the store sizes")
    ap.add_argument("--keep", action="store_true", help="keep the stores (default: delete each after use)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--measure_downstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_store_scale.json")
    args = ap.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.batches, args.batch_size, args.read_batches)))
        return {}
    if args.measure_downstream is not None:
        print(json.dumps(measure_downstream(args.measure_downstream, args.root)))
        return {}
    sizes = sorted(set(args.sizes) | ({LARGEST} if args.largest else set()))
    rows: list[dict] = []
    report = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "rows": rows}
    for n in sizes if not args.downstream_only else []:
        for code, fmt, path in (("new", 2, REPO), ("old", 1, args.old_code)):
            if path is None or (code == "old" and n > args.old_max):
                continue
            root = args.root / f"{code}_{n}"
            t0 = time.perf_counter()
            build_store(root, n, fmt)
            built = time.perf_counter() - t0
            res = {"n_epochs": n, "code": code, "build_s": built, **run_measure(root, path, args)}
            rows.append(res)
            print(json.dumps(res), flush=True)
            if code == "new" and n == args.compare_readers:
                report["readers"] = compare_readers(root, args.read_batches)
                print(json.dumps(report["readers"]), flush=True)
            if not args.keep:
                shutil.rmtree(root)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))
    report["downstream"] = []
    for code, sizes_, path in (("new", args.downstream, REPO), ("old", args.downstream_old, args.old_code)):
        for n in sizes_ if path is not None else []:
            res = {"code": code, **run_downstream(n, path, args.root / f"features_{code}_{n}")}
            report["downstream"].append(res)
            print(json.dumps(res), flush=True)
            args.out.write_text(json.dumps(report, indent=2))
    print(table(rows))
    print(downstream_table(report["downstream"]))
    return report


if __name__ == "__main__":
    main()
