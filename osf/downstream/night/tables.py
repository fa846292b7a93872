"""Night-level targets from the cohorts' subject/visit tables (NSRR ``datasets/*.csv``).

Locations and id columns are in ``config.DatasetSpec``; tables are joined to recordings by subject id
and visit. A threshold turns a numeric variable into a binary task (``nsrr_ahi_hp3r_aasm15 >= 15``);
a 0/1 or text variable is a classification; any other numeric variable is a regression.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from osf import config

MAX_CLASSES = 10


@dataclass(frozen=True)
class NightTarget:
    """A variable of the subject tables and, for a binary task, the threshold (``value >= threshold``)."""

    variable: str
    threshold: float | None = None

    @property
    def name(self) -> str:
        """Task name for the results table, e.g. ``nsrr_ahi_hp3r_aasm15>=15``."""
        return self.variable if self.threshold is None else f"{self.variable}>={self.threshold:g}"


@dataclass
class SubjectTable:
    """One subject/visit table of a cohort, keyed by normalised subject id (and visit, -1 = any visit)."""

    path: Path
    dataset: str
    frame: pd.DataFrame  # columns _subject (str), _visit (int, -1 = applies to every visit) + variables


def normalise_id(value: object) -> str:
    """Comparable subject id: case-folded, stripped, numeric ids without leading zeros ("000123" = "123")."""
    text = str(value).strip().lower()
    if text.endswith(".0") and text[:-2].isdigit():  # an integer id read back as float
        text = text[:-2]
    return str(int(text)) if text.isdigit() else text


def _template_regex(template: str, visit_names: Sequence[str]) -> re.Pattern:
    """Glob template -> regex; ``{visit}`` matches a visit number or one of the dataset's visit names."""
    parts = re.split(r"(\{visit\}|\*)", template)
    visit = "|".join([r"\d+", *map(re.escape, visit_names)])
    pattern = "".join({"{visit}": f"(?P<visit>{visit})", "*": r"[^/]*"}.get(p, re.escape(p)) for p in parts)
    return re.compile("^" + pattern + "$")


def find_subject_tables(dataset: str, input_dir: str | Path) -> list[tuple[Path, int | None]]:
    """``(path, visit from the file name or None)`` of every subject table of ``dataset`` under ``input_dir``."""
    from osf.datasets.ingest import resolve_input_dir

    spec = config.get_dataset(dataset)
    root = resolve_input_dir(dataset, input_dir)
    visits = dict(spec.visit_names)
    found: list[tuple[Path, int | None]] = []
    for template in spec.subject_tables:
        template = template.replace("{name}", spec.name)
        rx = _template_regex(template, list(visits))
        for hit in sorted(glob.glob(glob.escape(str(root)) + "/" + template.replace("{visit}", "*"))):
            m = rx.match(Path(hit).relative_to(root).as_posix())
            if m is None or any(Path(hit) == p for p, _ in found):  # e.g. shhs-harmonized-... is no visit file
                continue
            text = m.groupdict().get("visit")
            visit = None if text is None else visits.get(text, int(text) if text.isdigit() else None)
            found.append((Path(hit), visit))
    return found


def _read_table(path: Path, dataset: str, visit: int | None) -> SubjectTable:
    spec = config.get_dataset(dataset)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path}: unreadable subject table: {err}") from err
    lower = {c.lower(): c for c in frame.columns}
    id_col = next((lower[c] for c in spec.subject_id_columns if c in lower), None)
    if id_col is None:
        raise ValueError(f"{path}: no subject id column (looked for {list(spec.subject_id_columns)}); "
                         f"columns start {list(frame.columns[:8])}")
    visit_col = next((lower[c] for c in spec.visit_columns if c in lower), None)
    out = frame.drop(columns=[id_col] + ([visit_col] if visit_col else []))
    out.insert(0, "_subject", frame[id_col].map(normalise_id))
    if visit_col is not None:
        names = dict(spec.visit_names)
        v = frame[visit_col].map(lambda x: names.get(str(x).strip(), x))
        out.insert(1, "_visit", pd.to_numeric(v, errors="coerce").fillna(-1).astype(int))
    else:
        out.insert(1, "_visit", -1 if visit is None else int(visit))
    return SubjectTable(path, dataset, out)


def load_subject_tables(dataset: str, input_dir: str | Path) -> list[SubjectTable]:
    """Every subject table of ``dataset`` under ``input_dir`` (raises when there is none)."""
    found = find_subject_tables(dataset, input_dir)
    if not found:
        spec = config.get_dataset(dataset)
        raise ValueError(f"{input_dir}: no subject tables for dataset {dataset!r} "
                         f"(looked for {[t.replace('{name}', spec.name) for t in spec.subject_tables]})")
    return [_read_table(p, dataset, v) for p, v in found]


def available_variables(tables: Sequence[SubjectTable]) -> list[str]:
    """Sorted variable names over ``tables`` (harmonised ``nsrr_*`` and cohort columns)."""
    return sorted({c for t in tables for c in t.frame.columns if not c.startswith("_")})


def check_variable(variable: str, tables: dict[str, list[SubjectTable]]) -> None:
    for dataset, tabs in tables.items():
        names = available_variables(tabs)
        if variable not in names:
            shown = ", ".join(names[:80]) + (f", ... ({len(names)} in all)" if len(names) > 80 else "")
            raise ValueError(f"unknown --target_variable {variable!r} for dataset {dataset!r} "
                             f"(tables {[t.path.name for t in tabs]}); available variables: {shown}")


def lookup_target(
    tables: dict[str, list[SubjectTable]], variable: str, recordings: pd.DataFrame
) -> pd.Series:
    """``variable`` per recording (rows of ``recordings``: dataset, subject_id, visit); NaN where missing.

    A table with a visit column (or a per-visit file such as ``shhs2-dataset``) matches the visit; a
    table without one gives its value to every visit of the subject. Where tables disagree the one
    listed first in the registry wins.
    """
    check_variable(variable, tables)
    out = pd.Series(np.nan, index=recordings.index, dtype=object)
    for dataset, group in recordings.groupby("dataset"):
        frame = pd.concat([t.frame[["_subject", "_visit", variable]] for t in tables[dataset]
                           if variable in t.frame.columns]).dropna(subset=[variable])
        frame = frame.drop_duplicates(["_subject", "_visit"])
        keys = pd.DataFrame({"_subject": group["subject_id"].map(normalise_id).to_numpy(),
                             "_visit": group["visit"].astype(int).to_numpy()}, index=group.index)
        exact = keys.merge(frame[frame["_visit"] >= 0], on=["_subject", "_visit"], how="left")[variable]
        anyv = keys.merge(frame[frame["_visit"] < 0].drop_duplicates("_subject").drop(columns="_visit"),
                          on="_subject", how="left")[variable]
        out.loc[group.index] = exact.fillna(anyv).to_numpy()
    return out


@dataclass
class EncodedTarget:
    """Targets of the nights that have one; ``class_names`` is None for a regression."""

    y: np.ndarray  # int64 class ids or float64 values
    keep: np.ndarray  # bool per night: target present
    class_names: tuple[str, ...] | None

    @property
    def is_regression(self) -> bool:
        """True for a numeric target without threshold."""
        return self.class_names is None


def encode_target(values: pd.Series, target: NightTarget) -> EncodedTarget:
    """Class ids / values of ``values`` (missing: ``keep`` False)."""
    raw = values.astype(object).where(values.notna(), None)
    text = raw.map(lambda v: None if v is None or str(v).strip() in ("", "nan", "NaN") else str(v).strip())
    keep = text.notna().to_numpy()
    numeric = pd.to_numeric(text[keep], errors="coerce")
    is_numeric = bool(keep.any()) and numeric.notna().all()
    if target.threshold is not None:
        if not is_numeric:
            bad = sorted(set(text[keep][numeric.isna()]))[:5]
            raise ValueError(f"--target_threshold needs a numeric variable; {target.variable!r} has values {bad}")
        y = np.zeros(len(values), dtype=np.int64)
        y[keep] = (numeric.to_numpy(dtype=float) >= target.threshold).astype(np.int64)
        names = (f"{target.variable}<{target.threshold:g}", f"{target.variable}>={target.threshold:g}")
        return EncodedTarget(y, keep, names)
    if is_numeric and not set(np.unique(numeric.to_numpy(dtype=float))) <= {0.0, 1.0}:
        y = np.full(len(values), np.nan)
        y[keep] = numeric.to_numpy(dtype=float)
        return EncodedTarget(y, keep, None)
    levels = sorted(set(text[keep]))
    if len(levels) > MAX_CLASSES:
        raise ValueError(f"{target.variable!r} has {len(levels)} distinct text values (more than {MAX_CLASSES}); "
                         "name a numeric variable (regression) or one with few classes")
    code = {v: i for i, v in enumerate(levels)}
    y = np.full(len(values), -1, dtype=np.int64)
    y[keep] = text[keep].map(code).to_numpy(dtype=np.int64)
    return EncodedTarget(y, keep, tuple(f"{target.variable}={v}" for v in levels))
