"""Find a cohort's recordings under its download folder, using the layout in ``config.DATASETS``.

NSRR cohorts: ``polysomnography/edfs/<sub>/<stem>.edf`` with scoring in
``polysomnography/annotations-events-nsrr/<sub>/<stem>-nsrr.xml``, falling back to
``annotations-events-profusion/<sub>/<stem>-profusion.xml``.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from osf import config
from osf.datasets.io.errors import IngestionError


@dataclass(frozen=True)
class RecordingSource:
    """One recording of a dataset: its EDF, scoring file (or None) and ids."""

    dataset: str
    edf_path: Path
    scoring_path: Path | None
    recording_id: str
    subject_id: str
    visit: int


def parse_recording_name(edf_path: str | Path, dataset: str) -> tuple[str, str, int]:
    """``(recording_id, subject_id, visit)`` from an EDF file name, e.g. shhs1-200001 -> (.., "200001", 1)."""
    spec = config.get_dataset(dataset)
    stem = Path(edf_path).stem
    m = re.match(spec.id_pattern, stem)
    if m is None:
        raise IngestionError(
            edf_path, f"file name {stem!r} does not follow the {dataset} pattern {spec.id_pattern}"
        )
    groups = m.groupdict()
    visit_text = groups.get("visit")
    names = dict(spec.visit_names)
    if visit_text is None:
        visit = 1
    elif visit_text in names:
        visit = names[visit_text]
    else:
        visit = int(visit_text)
    return stem, groups["subject"], visit


def find_scoring(edf_path: str | Path, dataset: str, input_dir: str | Path) -> Path | None:
    """The scoring file of an EDF per the dataset's templates (first match), or None."""
    spec = config.get_dataset(dataset)
    edf_path, input_dir = Path(edf_path), Path(input_dir)
    edf_root = (input_dir / spec.edf_dir).resolve()
    try:
        parent = edf_path.resolve().parent.relative_to(edf_root).as_posix()
    except ValueError:
        parent = "."
    m = re.match(spec.id_pattern, edf_path.stem)
    fields = {"parent": parent, "stem": edf_path.stem, **(m.groupdict() if m else {})}
    for template in spec.scoring:
        try:
            pattern = template.format(**{k: v if v is not None else "" for k, v in fields.items()})
        except KeyError:
            continue  # the template needs a group this file name lacks
        hits = sorted(glob.glob(glob.escape(str(input_dir)) + "/" + pattern))
        if hits:
            return Path(hits[0])
    return None


def _any_case(pattern: str) -> str:
    """``pattern`` with its file-name letters matching either case, so "*.edf" also finds "NIGHT.EDF"."""
    head, sep, name = pattern.rpartition("/")
    if "[" in name:  # already a character class: leave it as written
        return pattern
    return head + sep + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)


def find_recordings(
    dataset: str, input_dir: str | Path, rejected: list[tuple[Path, str]] | None = None
) -> list[RecordingSource]:
    """Every EDF of ``dataset`` under ``input_dir`` with its scoring file and ids, sorted by path.

    An EDF whose name does not follow the dataset's pattern raises, unless ``rejected`` is given:
    then it is appended there as ``(path, reason)`` and skipped, so a batch goes on past it.
    """
    spec = config.get_dataset(dataset)
    input_dir = Path(input_dir)
    root = input_dir / spec.edf_dir
    if not root.is_dir():
        raise IngestionError(root, f"no such folder; the {dataset} layout expects EDFs under {spec.edf_dir}/")
    edfs = sorted(p for p in root.glob(_any_case(spec.edf_glob)) if p.suffix.lower() in (".edf", ".bdf", ".rec"))
    out = []
    for edf in edfs:
        try:
            recording_id, subject_id, visit = parse_recording_name(edf, dataset)
        except IngestionError as err:
            if rejected is None:
                raise
            rejected.append((edf, str(err)))
            continue
        out.append(
            RecordingSource(
                dataset, edf, find_scoring(edf, dataset, input_dir), recording_id, subject_id, visit
            )
        )
    return out
