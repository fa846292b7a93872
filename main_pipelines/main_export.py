"""Export the backbone of a pre-training checkpoint in the released OSF format (.pth + .safetensors).

    python main_pipelines/main_export.py --ckpt_path RUN/checkpoints/last.ckpt \
        --output pretrained_weights/osf_backbone.pth [--which teacher|student]

By default the backbone the run's recipe names is exported: the momentum TEACHER under the published
recipe (for dino_ours / dino, as OSF released it), the student under the small-scale recipe (it probes
better after a few hundred steps, benchmarks/README.md); methods without a teacher export their student
whatever --which says. The files load with
osf.backbone.checkpoint.load_backbone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osf.models.export import WHICH, BackboneShapeError, export_pretrained_backbone


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="Lightning checkpoint written by main_pretrain.py")
    p.add_argument("--output", default="pretrained_weights/osf_backbone.pth",
                   help="output .pth (a .safetensors twin is written beside it)")
    p.add_argument("--which", choices=WHICH, default=None,
                   help="teacher (falls back to the student for methods without a teacher) or student; default: "
                        "what the run's recipe exports (osf.train_config: 'osf' the teacher, 'small' the student)")
    return p


def _shape_problem(err: RuntimeError) -> str:
    """One line from torch's multi-line load_state_dict error: the first size mismatch and how many there are."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    mismatches = [ln for ln in lines if ln.startswith("size mismatch")]
    if not mismatches:
        return f"cannot rebuild the backbone from its weights ({lines[0] if lines else type(err).__name__})"
    return (
        f"its weights do not fit the backbone it names: {len(mismatches)} tensors have another shape, "
        f"e.g. {mismatches[0].rstrip('.')}"
    )


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    """Parse ``argv`` and export; exits with the checkpoint's problem on bad input."""
    args = build_parser().parse_args(argv)
    try:
        pth, st = export_pretrained_backbone(args.ckpt_path, args.output, args.which)
    except BackboneShapeError as err:
        sys.exit(f"main_export: {args.ckpt_path}: {err.problem}; nothing was written")
    except ValueError as err:  # CheckpointError (bad checkpoint) or an --output without .pth/.safetensors
        sys.exit(f"main_export: {err}")
    except RuntimeError as err:  # load_state_dict: tensors of another shape than the backbone the checkpoint names
        sys.exit(f"main_export: {args.ckpt_path}: {_shape_problem(err)}; nothing was written")
    print(f"wrote {pth}\nwrote {st}")
    return pth, st


if __name__ == "__main__":
    main()
