"""Preprocess PSG recordings (EDF + scoring) into an OSF epoch store.

Examples (from the repo root):
    python main_pipelines/main_preprocess.py --dataset shhs --input_dir /data/shhs --output_dir store --num_workers 8
    python main_pipelines/main_preprocess.py --dataset mros --input_dir /data/mros --output_dir store   # adds to it
    python main_pipelines/main_preprocess.py --dataset generic --edf night.edf --annotations night.xml --output_dir store

Sharded (N processes or machines writing one store on a shared filesystem, e.g. a SLURM array:
bash_scripts/preprocess_slurm.sbatch), then one finalize:
    python main_pipelines/main_preprocess.py --dataset shhs --input_dir /data/shhs --output_dir store --shard 0/8
    ...
    python main_pipelines/main_preprocess.py --dataset shhs --input_dir /data/shhs --output_dir store --shard 7/8
    python main_pipelines/main_preprocess.py --finalize --output_dir store

A store written by an older osf (format 1) opens as it is; its memory-mapped index is written with
    python main_pipelines/main_preprocess.py --upgrade_store --output_dir store
"""

from __future__ import annotations

import argparse
import sys

from osf import config
from osf.datasets.ingest import (
    IngestReport,
    finalize_store,
    ingest_dataset,
    ingest_recordings,
    sources_from_files,
)
from osf.datasets.io.errors import IngestionError
from osf.datasets.splits import COHORT_GROUPS
from osf.datasets.store import upgrade_store


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError(f"split fractions must be 3 non-negative numbers summing to 1, got {text!r}")
    return parts  # type: ignore[return-value]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N like 0/8 (shard K of N, K from 0), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard K/N needs N >= 1 and 0 <= K < N, got {text!r}")
    return k, n


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the preprocessing entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(config.DATASETS),
                   help="dataset preset: its folder layout, file naming and channel aliases (required unless --finalize)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input_dir", help="the dataset's download folder (NSRR: the one holding polysomnography/)")
    src.add_argument("--edf", nargs="+", help="explicit EDF file(s) instead of a dataset folder")
    p.add_argument("--annotations", nargs="+", help="scoring file(s) for --edf, one per EDF, same order (default: one found next to the EDF by the dataset layout) "
                   "(NSRR/Profusion XML, EDF+ hypnogram or CSV onset,duration,description)")
    p.add_argument("--output_dir", required=True, help="epoch store folder (created, or added to)")
    p.add_argument("--num_workers", type=int, default=0, help="worker processes (0 = in this process)")
    p.add_argument("--channel_map", help="JSON file or object: canonical channel -> EDF label or [a, b] for a - b; "
                   "replaces the dataset's aliases, unlisted channels are absent")
    p.add_argument("--limit", type=_positive_int, help="ingest only the first K recordings (in path order)")
    p.add_argument("--split_fractions", type=_fractions, default=(0.8, 0.1, 0.1),
                   help="train,val,test fractions of subjects (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject-level split")
    p.add_argument("--cohort_group", choices=COHORT_GROUPS,
                   help="SleepBench-style group of this dataset (default: as before, else 'both')")
    p.add_argument("--overwrite", action="store_true", help="delete an existing store first")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p.add_argument("--accept_scoring_mismatch", action="store_true",
                   help="ingest nights whose scoring does not fit the recording (start minutes off, no usable stage, "
                        "no events, far past the end) instead of refusing them; unusable labels stay unknown")
    p.add_argument("--shard", type=_shard, metavar="K/N",
                   help="process only shard K of N (K = 0..N-1, by a hash of the recording id); N runs may write one "
                        "store at once; build the index afterwards with --finalize")
    src.add_argument("--finalize", action="store_true",
                     help="build the index and manifest of a store written with --shard once all shards are done")
    src.add_argument("--upgrade_store", action="store_true",
                     help="write the memory-mapped index (format 2) of a store written by an older osf, in place; "
                          "rows, splits and cohort groups stay as they are")
    return p


def _print_report(report: IngestReport) -> None:
    print(report.summary())
    if report.cleaned:
        print(f"  removed {len(report.cleaned)} stale temporary files left by killed runs", file=sys.stderr)
    for warnings in report.warnings.values():
        for message in warnings:
            print(f"  warning: {message}", file=sys.stderr)
    for reason in report.failed.values():
        print(f"  failed: {reason}", file=sys.stderr)


def _upgrade(output_dir: str) -> int:
    try:
        done = upgrade_store(output_dir)
    except (OSError, ValueError) as err:  # StoreLockedError and StoreManifestError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{output_dir}: " + ("upgraded to store format 2 (index/ written)" if done else "already store format 2"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the preprocessing; returns the exit status (1 when some recordings failed, 2 on a refused run)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.upgrade_store:
        return _upgrade(args.output_dir)
    if args.finalize:
        if args.shard or args.dataset:
            parser.error("--finalize takes only --output_dir (and --split_fractions / --seed)")
    elif not args.dataset or not (args.edf or args.input_dir):
        parser.error("--dataset and one of --input_dir / --edf are required (or --finalize)")
    if args.annotations and not args.edf:
        parser.error("--annotations goes with --edf (with --input_dir scoring files are found by the layout)")
    common = {
        "output_dir": args.output_dir, "num_workers": args.num_workers, "channel_map": args.channel_map,
        "split_fractions": args.split_fractions, "seed": args.seed, "cohort_group": args.cohort_group,
        "overwrite": args.overwrite, "progress": args.progress,
        "accept_scoring_mismatch": args.accept_scoring_mismatch, "shard": args.shard,
    }
    try:
        if args.finalize:
            report = finalize_store(args.output_dir, args.split_fractions, args.seed)
        elif args.edf:
            sources = sources_from_files(args.dataset, args.edf, args.annotations)
            report = ingest_recordings(sources[: args.limit], **common)
        else:
            report = ingest_dataset(args.dataset, args.input_dir, limit=args.limit, **common)
    except (IngestionError, ValueError) as err:  # StoreLockedError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_report(report)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
