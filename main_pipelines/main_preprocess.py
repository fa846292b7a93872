"""Preprocess PSG recordings (EDF + scoring) into an OSF epoch store.

Examples (from the repo root):
    python main_pipelines/main_preprocess.py --dataset shhs --input_dir /data/shhs --output_dir store --num_workers 8
    python main_pipelines/main_preprocess.py --dataset mros --input_dir /data/mros --output_dir store   # adds to it
    python main_pipelines/main_preprocess.py --dataset generic --edf night.edf --annotations night.xml --output_dir store
"""

from __future__ import annotations

import argparse
import sys

import config
from osf.datasets.ingest import ingest_dataset, ingest_recordings, sources_from_files
from osf.datasets.io.errors import IngestionError
from osf.datasets.splits import COHORT_GROUPS


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


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the preprocessing entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(config.DATASETS),
                   help="dataset preset: its folder layout, file naming and channel aliases")
    src = p.add_mutually_exclusive_group(required=True)
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
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the preprocessing; returns the exit status (1 when some recordings failed)."""
    args = build_parser().parse_args(argv)
    if args.annotations and not args.edf:
        build_parser().error("--annotations goes with --edf (with --input_dir scoring files are found by the layout)")
    common = {
        "output_dir": args.output_dir, "num_workers": args.num_workers, "channel_map": args.channel_map,
        "split_fractions": args.split_fractions, "seed": args.seed, "cohort_group": args.cohort_group,
        "overwrite": args.overwrite, "progress": args.progress,
    }
    try:
        if args.edf:
            sources = sources_from_files(args.dataset, args.edf, args.annotations)
            report = ingest_recordings(sources[: args.limit], **common)
        else:
            report = ingest_dataset(args.dataset, args.input_dir, limit=args.limit, **common)
    except (IngestionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    for reason in report.failed.values():
        print(f"  failed: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
