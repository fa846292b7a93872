"""Write a synthetic PSG cohort (EDF + NSRR XML + subjects CSV) in the NSRR folder layout.

Example:
    python main_pipelines/main_synthetic.py --output_dir data/synthetic --cohorts shhs,mesa,mros \
        --nights_per_cohort 6 --hours 2.0 --seed 0 --num_workers 2
"""

from __future__ import annotations

import argparse
import sys

from osf.datasets.synthetic import COHORT_PRESETS, generate_cohort
from osf.datasets.synthetic.generate import DEFAULT_GENERATOR, GENERATOR_VERSIONS


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the synthetic cohort generator."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True, help="folder to write (must be empty unless --overwrite)")
    p.add_argument(
        "--cohorts",
        default="shhs,mesa,mros",
        help=f"comma-separated cohort presets, from {sorted(COHORT_PRESETS)} (default: %(default)s)",
    )
    p.add_argument(
        "--nights_per_cohort",
        type=int,
        default=6,
        help="nights (= subjects) per cohort (default: %(default)s)",
    )
    p.add_argument(
        "--hours", type=float, default=2.0, help="recording length per night in hours (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same bytes (default: %(default)s)"
    )
    p.add_argument(
        "--generator",
        type=int,
        default=DEFAULT_GENERATOR,
        help=f"generator major version, {GENERATOR_VERSIONS} (default: %(default)s; 1 reproduces 1.x byte for byte)",
    )
    p.add_argument("--num_workers", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace this generator's output in a non-empty --output_dir"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        manifest = generate_cohort(
            args.output_dir,
            cohorts=args.cohorts,
            nights_per_cohort=args.nights_per_cohort,
            hours=args.hours,
            seed=args.seed,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
            progress=args.progress,
            generator=args.generator,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
