"""Export the backbone of a pre-training checkpoint in the released OSF format (.pth + .safetensors).

    python main_pipelines/main_export.py --ckpt_path RUN/checkpoints/last.ckpt \
        --output pretrained_weights/osf_backbone.pth [--which teacher|student]

By default the momentum TEACHER is exported (for dino_ours / dino, as OSF released it); methods
without a teacher export their student whatever --which says. The files load with
osf.backbone.checkpoint.load_backbone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osf.models.export import WHICH, export_pretrained_backbone


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="Lightning checkpoint written by main_pretrain.py")
    p.add_argument("--output", default="pretrained_weights/osf_backbone.pth",
                   help="output .pth (a .safetensors twin is written beside it)")
    p.add_argument("--which", choices=WHICH, default="teacher",
                   help="teacher (default; falls back to the student for methods without a teacher) or student")
    return p


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    """Parse ``argv`` and export; exits with the checkpoint's problem on bad input."""
    args = build_parser().parse_args(argv)
    try:
        pth, st = export_pretrained_backbone(args.ckpt_path, args.output, args.which)
    except ValueError as err:  # CheckpointError (bad checkpoint) or an --output without .pth/.safetensors
        sys.exit(f"main_export: {err}")
    print(f"wrote {pth}\nwrote {st}")
    return pth, st


if __name__ == "__main__":
    main()
