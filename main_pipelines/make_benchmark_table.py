"""Aggregate downstream results into a Markdown table and PNG figures.

    python main_pipelines/make_benchmark_table.py --results_csv OUT/results.csv --output_dir OUT/report \
        [--metric test_kappa] [--setting linear_probe]

Writes ``benchmark_table.md`` (metric per method x task, and per channel preset when several were
run), ``<metric>_by_method.png``, ``<metric>_vs_channels.png`` and, when runs carry
``pretrain_samples``, ``<metric>_scaling.png`` (one line per backbone size).
"""

from __future__ import annotations

import argparse
import sys

from osf.downstream.report import make_benchmark_report


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_csv", nargs="+", required=True, help="one or more results.csv files")
    p.add_argument("--output_dir", required=True, help="folder for the table and figures")
    p.add_argument("--metric", default="test_auroc", help="results column, e.g. test_auroc, test_kappa, test_macro_f1")
    p.add_argument("--setting", default=None, help="only this setting, e.g. linear_probe, finetune, linear_probe_10shot")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build the report; exit status 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        written = make_benchmark_report(args.results_csv, args.output_dir, args.metric, args.setting)
    except (ValueError, FileNotFoundError) as err:
        print(f"make_benchmark_table.py: error: {err}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path if path is not None else '(no data: no run has pretrain_samples)'}")
    print(written["table"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
