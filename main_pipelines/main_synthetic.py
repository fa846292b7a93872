"""Write a synthetic PSG cohort (EDF + NSRR XML + subjects CSV) in the NSRR folder layout.

Example:
    python main_pipelines/main_synthetic.py --output_dir data/synthetic --cohorts shhs,mesa,mros \
        --nights_per_cohort 6 --hours 2.0 --seed 0 --num_workers 2
    python main_pipelines/main_synthetic.py --layout sleep_edf --output_dir data/sleep-cassette \
        --nights_per_cohort 2 --hours 8 --day_wake_hours 7 7    # SC4ssNE0-PSG.edf + 24 h hypnograms
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
    p.add_argument("--layout", choices=("nsrr", "sleep_edf"), default="nsrr",
                   help="nsrr: the cohorts in the NSRR folder layout; sleep_edf: Sleep-EDF cassette recordings "
                        "(file names, labels, rates, 24 h R&K hypnograms; --cohorts is not used)")
    p.add_argument("--day_wake_hours", type=float, nargs=2, default=(7.0, 7.0), metavar=("BEFORE", "AFTER"),
                   help="--layout sleep_edf: day-time wake before and after the night (default: %(default)s)")
    return p


def _sleep_edf(args: argparse.Namespace) -> list:
    """Write Sleep-EDF-layout recordings (subjects 0..n-1, night 1) into --output_dir."""
    from osf.datasets.synthetic.sleep_edf_layout import sleep_edf_names, write_sleep_edf_night

    sleep_edf_names(args.nights_per_cohort - 1)  # refuses more subjects than the names hold, before any work
    return [p for s in range(args.nights_per_cohort)
            for p in write_sleep_edf_night(args.output_dir, s, seed=args.seed, night_hours=args.hours,
                                           day_wake_hours=tuple(args.day_wake_hours))]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.layout == "sleep_edf":
        try:
            written = _sleep_edf(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("\n".join(f"wrote {p}" for p in written))
        return 0
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
