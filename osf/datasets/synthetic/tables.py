"""NSRR-style subject/visit tables of a synthetic cohort (harmonised ``nsrr_*`` + cohort columns).

The file names and id columns follow the dataset registry (``config.DatasetSpec.subject_tables``,
``subject_id_columns``, ``visit_columns``), so night-level targets are read from a synthetic cohort
exactly as from an NSRR download (``osf.downstream.night.load_subject_tables``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from osf import config
from osf.datasets.io.layout import parse_recording_name
from osf.utils.atomic import atomic_write_text

# Harmonised NSRR variable -> column of the synthetic subjects row.
HARMONIZED: dict[str, str] = {
    "nsrr_age": "age",
    "nsrr_sex": "sex",
    "nsrr_bmi": "bmi",
    "nsrr_ahi_hp3r_aasm15": "ahi",
}
SEX_NAMES = {"M": "male", "F": "female"}


def _table_name(template: str, spec: config.DatasetSpec, visit: int, version: str) -> str:
    visit_text = {v: k for k, v in spec.visit_names}.get(visit, str(visit))
    return template.replace("{name}", spec.name).replace("{visit}", visit_text).replace("*", version)


def subject_tables(dataset: str, rows: Sequence[dict], version: str) -> dict[str, pd.DataFrame]:
    """``{relative path: table}``: the harmonised table and the cohort table of ``rows`` (subjects CSV rows)."""
    spec = config.get_dataset(dataset)
    ids = [parse_recording_name(f"{r['recording_id']}.edf", dataset) for r in rows]
    keys = pd.DataFrame({spec.subject_id_columns[0]: [s for _, s, _ in ids], spec.visit_columns[0]: [v for *_, v in ids]})
    harmonized = keys.assign(**{k: [r[v] for r in rows] for k, v in HARMONIZED.items()})
    harmonized["nsrr_sex"] = harmonized["nsrr_sex"].map(SEX_NAMES)
    cohort = pd.concat([keys, pd.DataFrame(rows).drop(columns=["nsrrid", "recording_id"], errors="ignore")], axis=1)
    visit = int(keys.iloc[0, 1]) if len(keys) else 1
    harm_t, cohort_t = spec.subject_tables[:2]
    return {_table_name(harm_t, spec, visit, version): harmonized, _table_name(cohort_t, spec, visit, version): cohort}


def write_subject_tables(cohort_dir: Path, dataset: str, rows: Sequence[dict], version: str) -> list[Path]:
    """Write :func:`subject_tables` under ``cohort_dir`` (atomically); returns the paths."""
    paths = []
    for rel, table in subject_tables(dataset, rows, version).items():
        path = Path(cohort_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
        paths.append(path)
    return paths
