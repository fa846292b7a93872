"""Stage a new night: EDF (+ optional scoring) -> hypnogram, event probabilities, summary, QC report, figure.

    python main_pipelines/main_predict.py --edf NIGHT.edf --classifier CLASSIFIER.pt [MORE.pt ...] \
        --output_dir OUT [--channel_map MAP.json] [--annotations SCORING.xml] [--dataset generic]

Several classifier files each serve their own tasks (e.g. a fine-tuned staging classifier and
linear-probe event heads); one of them must stage.

Exit status 2 with a one-line reason when the night cannot be staged (unreadable EDF, none of the
classifier's channels, bad checkpoint); missing channels that still allow a prediction are warned
about on stderr and in the QC report.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from osf import config
from osf.predict.night import HYPNOGRAM_FORMATS, predict_night, print_warnings
from osf.predict.report import MissingChannelsWarning


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edf", required=True, type=Path, help="the night's EDF file")
    p.add_argument("--classifier", required=True, type=Path, nargs="+",
                   help="classifier file(s) written by main_finetune.py (OUT/classifier.pt); several files each "
                        "serve their own tasks, e.g. a fine-tuned staging classifier and event probes")
    p.add_argument("--output_dir", required=True, type=Path, help="folder for the outputs (created)")
    p.add_argument("--channel_map", default=None,
                   help='JSON file or inline object, canonical channel -> EDF label or [a, b] for a - b, e.g. '
                        '\'{"EEG_C3_A2": "C3-M2", "EMG_Chin": ["LChin", "RChin"]}\'; replaces the dataset\'s aliases')
    p.add_argument("--annotations", type=Path, default=None,
                   help="scoring file of the night (NSRR XML, Profusion XML, EDF+): adds agreement and kappa")
    p.add_argument("--dataset", default="generic", choices=sorted(config.DATASETS),
                   help="cohort the EDF comes from: its channel aliases (default: generic)")
    p.add_argument("--hypnogram_format", choices=(*HYPNOGRAM_FORMATS, "both"), default="both",
                   help="hypnogram file(s) to write: NSRR XML, EDF+ annotations or both")
    p.add_argument("--event_threshold", type=float, default=None,
                   help="probability at which an epoch counts as an event (default: each head's validation threshold)")
    p.add_argument("--low_confidence", type=float, default=0.5, help="stage confidence below which an epoch is flagged")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--accept_scoring_mismatch", action="store_true",
                   help="compare with an --annotations file that does not fit the EDF (start minutes off, no usable "
                        "stage, no events) instead of refusing it")
    p.add_argument("--lights", default=None, metavar="auto|HH:MM-HH:MM",
                   help="keep only lights off to lights on: detected from the signal (auto) or given as clock times; "
                        "for recordings longer than a night")
    return p


def _print_channels(result) -> None:
    """Which channels staged the night, what stood in for what, and the plausibility flags (stdout)."""
    qc = result.qc
    print(f"channels used: {', '.join(qc['channels_used']) or 'none'}"
          + (f" (absent: {', '.join(qc['missing_classifier_channels'])})" if qc["missing_classifier_channels"] else ""))
    for channel, what in qc.get("substitutions", {}).items():
        print(f"  substitution {channel} <- {what}")
    for channel, why in qc.get("refused_substitutions", {}).items():
        print(f"  not used for {channel}: {why}")
    if qc.get("lights"):
        lights = qc["lights"]
        print(f"lights ({lights['method']}): {lights['lights_off_s'] / 3600:.2f} h to {lights['lights_on_s'] / 3600:.2f} h "
              "after the EDF start; statistics cover that window")
    match = qc.get("validation_match")
    if match:
        scores = ", ".join(f"{p} {k:.2f}" for p, k in match["all_validated"].items())
        lacks = f", lacking {', '.join(match['night_lacks'])}" if match["night_lacks"] else ""
        print(f"classifier validated on (kappa): {scores}; this night is closest to {match['preset']} "
              f"(validation kappa {match['validation_kappa']:.2f}){lacks}")
    else:
        print("classifier file has no validation kappa per montage: how well it stages this montage is unknown")
    for flag, reason in qc.get("plausibility", {}).items():
        print(f"CHECK {flag}: {reason}")


def main(argv: list[str] | None = None) -> int:
    """Run the prediction; return the exit status."""
    args = build_parser().parse_args(argv)
    formats = HYPNOGRAM_FORMATS if args.hypnogram_format == "both" else (args.hypnogram_format,)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingChannelsWarning)  # printed below with the QC report's warnings
            result = predict_night(
                args.edf, args.classifier, channel_map=args.channel_map,
                annotations=args.annotations, dataset=args.dataset, output_dir=args.output_dir,
                hypnogram_formats=formats, event_threshold=args.event_threshold,
                low_confidence=args.low_confidence, batch_size=args.batch_size, device=args.device,
                accept_scoring_mismatch=args.accept_scoring_mismatch, lights=args.lights,
            )
    except (OSError, ValueError) as err:  # IngestionError, CheckpointError, MissingChannelsError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    for message in result.qc.get("ingestion", {}).get("warnings", []):  # dead channels, scoring problems
        print(f"WARNING: {message}", file=sys.stderr)
    print_warnings(result)
    _print_channels(result)
    s = result.summary
    print(f"{args.edf}: {result.n_epochs} epochs, TST {s['total_sleep_time_min']:.1f} min, "
          f"SE {s['sleep_efficiency_pct']:.1f}%")
    if "scored" in s:
        print(f"agreement with {args.annotations}: {100 * s['scored']['agreement']:.1f}%, "
              f"kappa {s['scored']['cohen_kappa']:.3f}")
    for name, path in result.files.items():
        print(f"  {name:14s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
