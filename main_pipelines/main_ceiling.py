"""A ceiling for one task and channel preset: handcrafted features + logistic regression, or a supervised CNN.

    python main_pipelines/main_ceiling.py --kind supervised --data_dir STORE --eval_channels cardio_respiratory \
        --eval_label Stage --output_dir OUT

Writes OUT/ceiling_result.json (test metrics with subject-bootstrap CIs) and OUT/ceiling_test_predictions.npz
(the linear probes' format, so a paired difference against a probe is one call).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from osf import entry_calls
from osf.downstream.ceilings import CeilingConfig
from osf.tasks import get_task
from osf.utils.config_fields import add_flag, flags_of, with_overrides

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags, built from :class:`osf.downstream.ceilings.CeilingConfig`."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = CeilingConfig()
    for flag in flags_of(CeilingConfig):
        value = getattr(defaults, flag.field)
        add_flag(p, flag, None if value is None else str(value))
    return p


def config_from_args(args: argparse.Namespace) -> CeilingConfig:
    """The run of a parsed command line (unset flags: the dataclass defaults)."""
    return with_overrides(CeilingConfig(), {k: v for k, v in vars(args).items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    """Run one ceiling and print its test metric; exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        result = entry_calls.ceiling(dataclasses.asdict(config_from_args(args)))
    except (ValueError, FileNotFoundError) as err:
        print(f"main_ceiling.py: error: {err}", file=sys.stderr)
        return 2
    test = result.metrics
    metric = get_task(args.eval_label).reporting_metric
    print(f"{args.kind} ceiling, {args.eval_label}, {args.eval_channels}: test {metric} {test[metric]:.3f} "
          f"{test.get(f'{metric}_ci95')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
