"""Linear-probe wall time: cached features vs. the frozen backbone run at every step (OSF's way).

Both arms train the same linear head for ``--steps`` optimizer steps with batch ``--batch-size`` and
score the validation split every ``--eval-every`` steps (model selection):

* **baseline** (in-run, OSF's way): every training step reads a batch from the store, runs the frozen
  backbone on it, then the head; every validation check runs the backbone over the whole val split.
* **cached, cold**: one backbone pass over train + val written to the feature cache, then the probe
  on the cached arrays (:func:`osf.downstream.epoch.linear_probe.train_linear_probe`).
* **cached, warm**: the same run again with the cache present (another seed / lr / k-shot draw).

Prints a table and writes JSON to ``benchmarks/results/bench_finetune_<device>.json``.

    python benchmarks/bench_finetune.py                      # CPU, vit_nano, 500 steps
    python benchmarks/bench_finetune.py --device cuda --encoder vit_base --n-subjects 40
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from osf.backbone import create_backbone
from osf.datasets.datamodule import SleepDataModule
from osf.downstream.epoch.linear_probe import selection_score, train_linear_probe
from osf.downstream.features import backbone_hash, cached_features, encode
from osf.downstream.inputs import dataset_split_hash, full_loader
from osf.testing import make_random_store

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline_probe(backbone, dm, steps, eval_every, lr, device, pooling="cls") -> tuple[float, float]:
    """OSF's way: frozen backbone inside the training loop. Returns (seconds, best val score)."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    head = nn.Linear(backbone.width, dm.num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    train = itertools.chain.from_iterable(dm.train_dataloader() for _ in itertools.count())
    best = -math.inf
    for step in range(1, steps + 1):
        batch = next(train)
        with torch.no_grad():
            feats = encode(backbone, batch["signal"].to(device), batch["channel_mask"].to(device), pooling)
        loss = nn.functional.cross_entropy(head(feats), batch["label"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            probs, labels = [], []
            with torch.no_grad():
                for vb in full_loader(dm, "val", dm.batch_size):
                    f = encode(backbone, vb["signal"].to(device), vb["channel_mask"].to(device), pooling)
                    probs.append(head(f).softmax(-1).cpu())
                    labels.append(vb["label"])
            best = max(best, selection_score(torch.cat(labels).numpy(), torch.cat(probs).numpy(), "macro_f1"))
    _sync(device)
    return time.perf_counter() - t0, best


def cached_probe(backbone, dm, steps, eval_every, lr, device, cache_dir) -> tuple[float, float, bool]:
    """Cached features + probe. Returns (seconds, best val score, cache hit)."""
    t0 = time.perf_counter()
    bb = backbone_hash(backbone)
    feats, hits = {}, []
    for split in ("train", "val"):
        key = {"backbone_hash": bb, "split_hash": dataset_split_hash(dm, split)}
        feats[split], info = cached_features(cache_dir, key, backbone, full_loader(dm, split, dm.batch_size),
                                             device=device)
        hits.append(info.hit)
    res = train_linear_probe(feats["train"].features, feats["train"].labels, feats["val"].features,
                             feats["val"].labels, dm.num_classes, max_steps=steps, lr=lr, batch_size=dm.batch_size,
                             eval_every=eval_every, device=device)
    _sync(torch.device(device))
    return time.perf_counter() - t0, res.best_score, all(hits)


def main(argv: list[str] | None = None) -> dict:
    """Run both arms and report the speed-up as ratios against the in-run baseline."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="vit_nano")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--n-subjects", type=int, default=12)
    p.add_argument("--n-epochs", type=int, default=60, help="epochs per recording of the random store")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        store = make_random_store(Path(tmp) / "store", n_subjects=args.n_subjects, n_epochs=args.n_epochs, seed=0)
        dm = SleepDataModule(store, task="downstream", eval_label="Stage", batch_size=args.batch_size)
        dm.setup()
        torch.manual_seed(0)
        backbone = create_backbone(args.encoder).to(device).eval()
        # warm-up: first-call costs (allocator, kernels, optimizer imports) are paid by neither arm
        with torch.no_grad():
            encode(backbone, torch.zeros(2, 12, 1920, device=device), torch.ones(2, 12, dtype=torch.bool, device=device), "cls")
        torch.optim.AdamW(nn.Linear(2, 2).parameters())

        base_s, base_score = baseline_probe(backbone, dm, args.steps, args.eval_every, args.lr, device)
        cache_dir = Path(tmp) / "cache"
        cold_s, cold_score, cold_hit = cached_probe(backbone, dm, args.steps, args.eval_every, args.lr, device, cache_dir)
        warm_s, warm_score, warm_hit = cached_probe(backbone, dm, args.steps, args.eval_every, args.lr, device, cache_dir)
        assert not cold_hit and warm_hit
        n_train, n_val = len(dm.train_dataset), len(dm.val_dataset)

    rows = [
        {"arm": "baseline: backbone every step", "seconds": base_s, "val_macro_f1": base_score, "speedup": 1.0},
        {"arm": "cached features, cold cache", "seconds": cold_s, "val_macro_f1": cold_score, "speedup": base_s / cold_s},
        {"arm": "cached features, warm cache", "seconds": warm_s, "val_macro_f1": warm_score, "speedup": base_s / warm_s},
    ]
    print(f"\n{args.encoder} on {device}, {args.steps} steps x batch {args.batch_size}, val every {args.eval_every} "
          f"steps; train {n_train} / val {n_val} epochs\n")
    print(f"| {'arm':32s} | {'seconds':>8s} | {'best val macro-F1':>17s} | {'x baseline':>10s} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 19}|{'-' * 12}|")
    for r in rows:
        print(f"| {r['arm']:32s} | {r['seconds']:8.2f} | {r['val_macro_f1']:17.3f} | {r['speedup']:10.1f} |")
    result = {
        "benchmark": "bench_finetune", "encoder": args.encoder, "device": str(device), "steps": args.steps,
        "batch_size": args.batch_size, "eval_every": args.eval_every, "n_train_epochs": n_train,
        "n_val_epochs": n_val, "threads": torch.get_num_threads(), "rows": rows,
        "loadavg": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    out = args.out or RESULTS_DIR / f"bench_finetune_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
