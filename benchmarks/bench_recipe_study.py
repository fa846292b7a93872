"""The small-scale recipe study: which DINO settings leave the uniform state, and do their probes beat random?

For each configuration (a JSON list of method overrides on top of ``--recipe``), pre-trains ``--method``
(``dino_ours`` or ``dino``) on an epoch store with the library (``osf.models.training``), then probes the teacher and the student against a random-init
backbone of the same seed. Probes here are a fast proxy of ``main_finetune.py``'s: scikit-learn logistic
regression on standardised frozen features (train split every 3rd epoch, all test epochs), scored on the
test subjects with a paired subject-bootstrap CI of the difference (``osf.downstream.metrics``).

    python benchmarks/bench_recipe_study.py --store STORE --configs '[{"name": "small", "head_pooling": "mean"}]'
        [--method dino_ours] [--recipe small] [--steps 200] [--batch_size 32] [--lr LR_PER_256]
        [--poolings cls,mean,groups] [--out study.jsonl]

The store used for the table in benchmarks/README.md: ``main_synthetic.py --cohorts shhs,mros,mesa
--nights_per_cohort 14 --hours 1.0 --seed 0`` and ``main_preprocess.py --split_fractions 0.5,0.25,0.25``
(42 subjects, 11 in test). Appends one JSON line per configuration to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from osf import config
from osf.backbone.vit1d_cls import create_backbone
from osf.datasets.store import EpochStore
from osf.downstream.features import pool_tokens
from osf.downstream.metrics import paired_difference
from osf.models.training import resolve_pretrain_config, run_pretrain
from osf.tasks import get_task, studied_tasks

# label column -> reporting metric of the task registry's evaluated tasks
TASKS: dict[str, str] = {get_task(t).label_column: get_task(t).reporting_metric for t in studied_tasks()}


def load_epochs(store: Path) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Signals, channel masks and index rows of the test split and every 3rd training epoch."""
    st = EpochStore(store)
    index = st.index.reset_index(drop=True)
    keep = (index["split"] == "test") | ((index["split"] == "train") & (index["epoch_index"] % 3 == 0))
    rows = np.flatnonzero(keep.to_numpy())
    return (torch.from_numpy(st.read(rows).astype(np.float32)), torch.from_numpy(st.channel_masks(rows)),
            index.iloc[rows].reset_index(drop=True))


@torch.no_grad()
def features(backbone: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, poolings: list[str]) -> dict[str, np.ndarray]:
    """Frozen features per pooling (``osf.downstream.features.POOLINGS``)."""
    backbone.eval()
    out: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
    for i in range(0, len(x), 256):
        cls, patches = backbone.forward_encoding(x[i : i + 256], channel_mask=mask[i : i + 256])
        for p in poolings:
            out[p].append(pool_tokens(cls, patches, p, backbone.num_groups))
    return {p: torch.cat(v).numpy() for p, v in out.items()}


def probe(feats: np.ndarray, index: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Logistic-regression probe per task: test predictions in ``paired_difference``'s format."""
    train, test = (index["split"] == "train").to_numpy(), (index["split"] == "test").to_numpy()
    z = StandardScaler().fit(feats[train]).transform(feats)
    out = {}
    for task in TASKS:
        y = index[task].to_numpy().astype(int)
        if task == "stage":
            y = np.array([config.STAGE_5_TO_4.get(v, -1) for v in y])
        fit, ev = train & (y >= 0), test & (y >= 0)
        clf = LogisticRegression(max_iter=300, C=0.5).fit(z[fit], y[fit])
        out[task] = {"labels": y[ev], "proba": clf.predict_proba(z[ev]), "subject_ids": index["subject_id"].to_numpy()[ev],
                     "recording_ids": index["recording_id"].to_numpy()[ev],
                     "epoch_index": index["epoch_index"].to_numpy()[ev], "threshold": np.array(np.nan)}
    return out


def compare(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """Per task: the headline metric of a and b and the paired CI of a - b."""
    return {task: {k: round(v, 3) for k, v in paired_difference(a[task], b[task], n_boot=300)[metric].items()}
            for task, metric in TASKS.items()}


def pretrain(store: Path, out: Path, name: str, args: argparse.Namespace, overrides: dict):
    """One run of ``args.method`` under ``args.recipe``; the trained module, wall seconds and its CSV log."""
    steps, seed = args.steps, args.seed
    cli = {"model_name": args.method, "recipe": args.recipe, "psg_encoder_name": args.backbone, "data_dir": str(store),
           "batch_size": args.batch_size, "max_steps": steps, "lr": args.lr, "num_workers": 0, "seed": seed, "accelerator": "cpu", "num_devices": 1,
           "num_nodes": 1, "output_dir": str(out), "run_name": name, "logger": "csv", "ckpt_every_n_steps": steps,
           "limit_val_batches": 2, "log_every_n_steps": 10, "progress_bar": False, "method_kwargs": overrides,
           "probe_label": None, "diag_every_n_steps": 0}
    t0 = time.perf_counter()
    result = run_pretrain(resolve_pretrain_config(cli))
    logs = pd.read_csv(max((result.run_dir / "csv_logs").glob("version_*/metrics.csv")))
    return result.model, time.perf_counter() - t0, logs


def main() -> None:
    """Run every configuration and append its record."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--configs", required=True, help="JSON list of {name, <dino_ours parameter>: value, ...}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (per 256 samples under 'small')")
    p.add_argument("--recipe", default="small", help="named recipe the configurations override (osf.train_config)")
    p.add_argument("--method", default="dino_ours", choices=["dino_ours", "dino"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="vit_nano", help="backbone size of the pre-trained and the random network")
    p.add_argument("--poolings", default="cls,mean,groups")
    p.add_argument("--runs_dir", type=Path, default=Path("recipe_study_runs"))
    p.add_argument("--out", type=Path, default=Path("recipe_study.jsonl"))
    args = p.parse_args()
    poolings = args.poolings.split(",")
    x, mask, index = load_epochs(args.store)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        random_probes = {k: probe(v, index) for k, v in features(create_backbone(args.backbone), x, mask, poolings).items()}
    for overrides in json.loads(args.configs):
        name = overrides.pop("name")
        model, seconds, logs = pretrain(args.store, args.runs_dir, name, args, overrides)
        loss = logs["train/dino_loss"].dropna().to_numpy()
        record = {"name": name, "method": args.method, "recipe": args.recipe, "backbone": args.backbone,
                  "overrides": overrides,
                  "steps": args.steps, "batch_size": args.batch_size, "lr": model.hparams.lr,
                  "seed": args.seed, "pretrain_s": round(seconds, 1), "loss_first": float(loss[:3].mean()),
                  "loss_last": float(loss[-3:].mean()), "log_k": math.log(model.hparams.dino_out_dim),
                  "teacher_entropy_last": float(logs["train/teacher_entropy"].dropna().to_numpy()[-3:].mean())}
        for which in ("teacher", "student"):
            feats = features(model.export_backbone(which), x, mask, poolings)
            record[which] = {pool: compare(probe(f, index), random_probes[pool]) for pool, f in feats.items()}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
