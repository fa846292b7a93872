"""A ceiling for one task and channel preset: handcrafted features + logistic regression, or a supervised CNN.

    python main_pipelines/main_ceiling.py --kind supervised --data_dir STORE --eval_channels cardio_respiratory \
        --eval_label Stage --output_dir OUT

Writes OUT/ceiling_result.json (test metrics with subject-bootstrap CIs) and OUT/ceiling_test_predictions.npz
(the linear probes' format, so a paired difference against a probe is one call).
"""

from __future__ import annotations

import argparse
import sys

from osf import entry_calls


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, help="handcrafted or supervised")
    p.add_argument("--data_dir", required=True, help="epoch store")
    p.add_argument("--eval_channels", default="full", help="channel preset")
    p.add_argument("--eval_label", default="Stage", help="Stage, Arousal, Hypopnea or Oxygen Desaturation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_boot", type=int, default=200, help="subject-bootstrap resamples of the CIs")
    p.add_argument("--max_steps", type=int, default=400, help="training steps of the supervised CNN")
    p.add_argument("--output_dir", default=None, help="where the result and predictions go")
    p.add_argument("--feature_cache_dir", default=None,
                   help="handcrafted: cache of the store's full-montage features, shared by every preset and task "
                        "(default: none, computed for this run)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ceiling and print its test metric; exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        result = entry_calls.ceiling(vars(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"main_ceiling.py: error: {err}", file=sys.stderr)
        return 2
    test = result.metrics
    metric = "kappa" if "kappa" in test and len(test.get("class_names", [])) > 2 else "auroc"
    print(f"{args.kind} ceiling, {args.eval_label}, {args.eval_channels}: test {metric} {test[metric]:.3f} "
          f"{test.get(f'{metric}_ci95')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
