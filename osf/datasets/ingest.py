"""Batch ingestion: every recording of a dataset (or given files) -> ``process_recording`` -> the store.

Recordings are processed in parallel worker processes, each of which writes its own recording
into the store through ``StoreWriter`` (atomic: temp files renamed into place), so only short
status messages travel back to the parent. Finished recordings are skipped (resume); a recording
that fails is recorded with its reason (``failures.jsonl``, then ``excluded`` in the manifest) and
the batch goes on. ``finalize`` then rebuilds the index over everything in the store, so several
datasets ingested by separate calls end up in one store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import config
from osf.datasets.io.channels import load_channel_map
from osf.datasets.io.errors import IngestionError
from osf.datasets.io.layout import RecordingSource, find_recordings, find_scoring, parse_recording_name
from osf.datasets.preprocess import pipeline_settings, process_recording
from osf.datasets.splits import COHORT_GROUPS
from osf.datasets.store import StoreWriter


@dataclass
class IngestReport:
    """What one ingestion call did: recording ids written / skipped (already in the store) / failed."""

    store: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source path -> reason

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.store}: {len(self.written)} written, {len(self.skipped)} already there, "
            f"{len(self.failed)} failed"
        )


def _ingest_one(
    root: str, pipeline: Mapping[str, Any], source: RecordingSource, channel_map: Mapping[str, Any] | None
) -> tuple[str, str]:
    """Worker: process and write one recording. Returns ("written", id) or ("failed", reason)."""
    try:
        epochs = process_recording(source.edf_path, source.scoring_path, source.dataset, channel_map)
        writer = StoreWriter(root, pipeline=pipeline)
        files = {"edf": os.fspath(source.edf_path)}
        if source.scoring_path is not None:
            files["annotations"] = os.fspath(source.scoring_path)
        writer.write_recording(source.dataset, source.recording_id, source.subject_id, source.visit, epochs, files)
    except IngestionError as err:
        return "failed", str(err)
    except Exception as err:  # noqa: BLE001 - a batch must not stop at one file; the reason is kept
        return "failed", f"{source.edf_path}: {type(err).__name__}: {err}"
    return "written", source.recording_id


def resolve_input_dir(dataset: str, input_dir: str | os.PathLike) -> Path:
    """``input_dir`` itself, or ``input_dir/<dataset>`` when the dataset's layout starts one level down."""
    input_dir = Path(input_dir)
    spec = config.get_dataset(dataset)
    if not (input_dir / spec.edf_dir).is_dir() and (input_dir / dataset / spec.edf_dir).is_dir():
        return input_dir / dataset
    return input_dir


def sources_from_files(
    dataset: str, edf_paths: Sequence[str | os.PathLike], annotation_paths: Sequence[str | os.PathLike | None] | None = None
) -> list[RecordingSource]:
    """Recording sources for explicitly given EDFs (and scoring files, matched by position)."""
    annotation_paths = list(annotation_paths) if annotation_paths else [None] * len(edf_paths)
    if len(annotation_paths) != len(edf_paths):
        raise ValueError(f"got {len(edf_paths)} EDF files but {len(annotation_paths)} annotation files; give one per EDF")
    out = []
    for edf, scoring in zip(edf_paths, annotation_paths):
        edf = Path(edf)
        if scoring is None:
            scoring = find_scoring(edf, dataset, edf.parent)
        recording_id, subject_id, visit = parse_recording_name(edf, dataset)
        out.append(RecordingSource(dataset, edf, None if scoring is None else Path(scoring), recording_id, subject_id, visit))
    return out


def _cohort_groups(root: Path, datasets: Sequence[str], cohort_group: str | None) -> dict[str, str]:
    """Cohort groups from earlier calls (manifest) updated with these datasets', so they accumulate."""
    groups: dict[str, str] = {}
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            groups = dict(json.loads(manifest.read_text()).get("cohort_groups", {}))
        except (json.JSONDecodeError, AttributeError):
            groups = {}
    if cohort_group is not None:
        if cohort_group not in COHORT_GROUPS:
            raise ValueError(f"cohort group must be one of {COHORT_GROUPS}, got {cohort_group!r}")
        groups.update({d: cohort_group for d in datasets})
    return groups


def ingest_recordings(
    sources: Sequence[RecordingSource],
    output_dir: str | os.PathLike,
    num_workers: int = 0,
    channel_map: Mapping[str, Any] | str | os.PathLike | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    cohort_group: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Process ``sources`` into the store at ``output_dir`` (resumable), then finalize it.

    ``num_workers=0`` runs in this process. The store is finalized even when some recordings
    failed; it raises only when the store holds no recording at all.
    """
    root = Path(output_dir)
    cmap = None if channel_map is None else load_channel_map(channel_map)  # validate once, fail early
    pipeline = pipeline_settings()
    writer = StoreWriter(root, overwrite=overwrite, pipeline=pipeline)
    report = IngestReport(store=root)
    groups = _cohort_groups(root, sorted({s.dataset for s in sources}), cohort_group)

    todo: list[RecordingSource] = []
    seen: dict[tuple[str, str], Path] = {}
    for src in sources:
        key = (src.dataset, src.recording_id)
        if key in seen:
            reason = f"{src.edf_path}: recording id {src.recording_id!r} already taken by {seen[key]}"
            writer.record_failure(src.dataset, src.edf_path, reason)
            report.failed[os.fspath(src.edf_path)] = reason
            continue
        seen[key] = src.edf_path
        try:
            done = writer.has_recording(src.dataset, src.recording_id)
        except ValueError as err:  # an id that cannot be a file name
            writer.record_failure(src.dataset, src.edf_path, f"{src.edf_path}: {err}")
            report.failed[os.fspath(src.edf_path)] = str(err)
            continue
        (report.skipped if done else todo).append(src.recording_id if done else src)

    def handle(src: RecordingSource, status: str, message: str) -> None:
        if status == "written":
            report.written.append(src.recording_id)
        else:
            writer.record_failure(src.dataset, src.edf_path, message)
            report.failed[os.fspath(src.edf_path)] = message

    bar = tqdm(total=len(todo), desc="preprocess", unit="rec", disable=not progress)
    try:
        if num_workers <= 0:
            for src in todo:
                handle(src, *_ingest_one(os.fspath(root), pipeline, src, cmap))
                bar.update()
        else:
            _run_parallel(todo, root, pipeline, cmap, num_workers, handle, bar)
    finally:
        bar.close()

    try:
        writer.finalize(split_fractions=split_fractions, seed=seed, cohort_groups=groups)
    except ValueError as err:
        raise IngestionError(
            root, f"nothing could be ingested ({len(report.failed)} failures, see {root / 'failures.jsonl'}): {err}"
        ) from err
    return report


def _run_parallel(todo, root, pipeline, cmap, num_workers, handle, bar) -> None:
    """Keep ``2 * num_workers`` recordings in flight; a dead worker fails its recordings, not the batch."""
    pending = list(reversed(todo))
    while pending:
        in_flight: dict[Future, RecordingSource] = {}
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < 2 * num_workers:
                        src = pending.pop()
                        in_flight[pool.submit(_ingest_one, os.fspath(root), pipeline, src, cmap)] = src
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        src = in_flight.pop(fut)
                        handle(src, *fut.result())
                        bar.update()
            except BrokenProcessPool:
                # A worker was killed (e.g. out of memory): every recording it could have held fails;
                # a later run retries them. The pool is rebuilt for the rest.
                for src in in_flight.values():
                    handle(src, "failed", f"{src.edf_path}: worker process died while processing it (out of memory?)")
                    bar.update()


def ingest_dataset(
    dataset: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    num_workers: int = 0,
    channel_map: Mapping[str, Any] | str | os.PathLike | None = None,
    limit: int | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    cohort_group: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest every recording of ``dataset`` found under ``input_dir`` (registry layout) into the store.

    ``limit`` keeps the first K recordings in path order (the same K on every call, so resuming works).
    """
    sources = find_recordings(dataset, resolve_input_dir(dataset, input_dir))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        sources = sources[:limit]
    if not sources:
        raise IngestionError(input_dir, f"no {dataset} recordings found (layout: {config.get_dataset(dataset).edf_dir}/)")
    return ingest_recordings(
        sources, output_dir, num_workers, channel_map, split_fractions, seed, cohort_group, overwrite, progress
    )
