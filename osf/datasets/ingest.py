"""Batch ingestion: every recording of a dataset (or given files) -> ``process_recording`` -> the store.

Recordings are processed in parallel worker processes, each of which writes its own recording
into the store through ``StoreWriter`` (atomic: temp files renamed into place), so only short
status messages travel back to the parent. Finished recordings are skipped (resume); a recording
that fails is recorded with its reason (``failures.jsonl``, then ``excluded`` in the manifest) and
the batch goes on. ``finalize`` then rebuilds the index over everything in the store, so several
datasets ingested by separate calls end up in one store.

Runs that write recordings share the store (``store_lock(shared=True)``: e.g. one ingestion per
cohort at once), since recordings are separate files; each rebuilds the index under ``index_lock``,
held only while the index and manifest are written, so every run's recordings land. ``--overwrite``
holds the store alone (a second run is refused with the holder's pid). Sharded ingestion (``shard=(k, n)``) is the exception: the n shards of a dataset, each taking the
recordings whose id hashes to it (``shard_of``), write into one store at once under a shared lock,
each leaving a marker when done; ``finalize_store`` then builds the index once every shard has.
"""

from __future__ import annotations

import functools
import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from osf import config
from osf.datasets.io.channels import load_channel_map
from osf.datasets.io.errors import IngestionError
from osf.datasets.io.layout import RecordingSource, find_recordings, find_scoring, parse_recording_name
from osf.datasets.manifest import ShardMarker
from osf.datasets.preprocess import pipeline_settings, process_recording
from osf.datasets.splits import COHORT_GROUPS
from osf.datasets.store import StoreLockedError, StoreWriter, index_lock, shard_of, store_lock


@dataclass
class IngestReport:
    """What one ingestion call did: recording ids written / skipped (already in the store) / failed."""

    store: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source path -> reason
    warnings: dict[str, list[str]] = field(default_factory=dict)  # recording id -> QC warnings (console)
    cleaned: list[str] = field(default_factory=list)  # stale temp files / orphan arrays removed
    shard: tuple[int, int] | None = None
    finalized: bool = False

    def summary(self) -> str:
        """One line for the console."""
        where = f" (shard {self.shard[0]}/{self.shard[1]}, index not rebuilt: run --finalize)" if self.shard else ""
        return (
            f"{self.store}{where}: {len(self.written)} written, {len(self.skipped)} already there, "
            f"{len(self.failed)} failed, {sum(map(len, self.warnings.values()))} warnings"
        )


@dataclass(frozen=True)
class IngestOutcome:
    """What became of one recording in a worker: written (with its QC warnings) or failed (with the reason)."""

    written: bool
    message: str  # the recording id when written, the reason when failed
    warnings: tuple[str, ...] = ()

    @classmethod
    def failure(cls, reason: str) -> IngestOutcome:
        return cls(False, reason)


def _ingest_one(
    root: str,
    pipeline: Mapping[str, Any],
    source: RecordingSource,
    channel_map: Mapping[str, Any] | None = None,
    accept_scoring_mismatch: bool = False,
) -> IngestOutcome:
    """Worker: process and write one recording."""
    try:
        epochs = process_recording(
            source.edf_path, source.scoring_path, source.dataset, channel_map, accept_scoring_mismatch
        )
        writer = StoreWriter(root, pipeline=pipeline)
        files = {"edf": os.fspath(source.edf_path)}
        if source.scoring_path is not None:
            files["annotations"] = os.fspath(source.scoring_path)
        writer.write_recording(source.dataset, source.recording_id, source.subject_id, source.visit, epochs, files)
    except IngestionError as err:
        return IngestOutcome.failure(str(err))
    except Exception as err:  # noqa: BLE001 - a batch must not stop at one file; the reason is kept
        return IngestOutcome.failure(f"{source.edf_path}: {type(err).__name__}: {err}")
    return IngestOutcome(True, source.recording_id, tuple(epochs.qc.get("warnings", [])))


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
    rejected: Sequence[tuple[str, Path, str]] = (),
    accept_scoring_mismatch: bool = False,
    shard: tuple[int, int] | None = None,
) -> IngestReport:
    """Process ``sources`` into the store at ``output_dir`` (resumable), then finalize it.

    ``rejected`` lists ``(dataset, path, reason)`` of files found but unusable before processing
    (e.g. a name outside the layout); they are recorded as failures like any other.

    ``num_workers=0`` runs in this process. The store is finalized even when some recordings
    failed; it raises only when the store holds no recording at all. The store is locked for the
    run, shared with other runs writing recordings (``StoreLockedError`` if an ``overwrite`` or a
    ``finalize_store`` holds it alone); the index is rebuilt under ``index_lock``. ``shard=(k, n)`` processes only the
    recordings of shard k of n, next to the other shards, and leaves the index to ``finalize_store``.
    """
    root = Path(output_dir)
    # Validate the options before StoreWriter, which may delete an existing store (overwrite=True).
    cmap = None if channel_map is None else load_channel_map(channel_map)
    if cohort_group is not None and cohort_group not in COHORT_GROUPS:
        raise ValueError(f"cohort group must be one of {COHORT_GROUPS}, got {cohort_group!r}")
    datasets = sorted({s.dataset for s in sources} | {r[0] for r in rejected})  # before sharding: an empty shard still reports
    if shard is not None:
        _check_shard(shard, overwrite)
        sources = [s for s in sources if shard_of(s.dataset, s.recording_id, shard[1]) == shard[0]]
        rejected = [r for r in rejected if shard_of(r[0], os.fspath(r[1]), shard[1]) == shard[0]]
    cleaned = [] if shard is not None or overwrite else _clean_if_alone(root)
    with store_lock(root, shared=not overwrite):
        writer = StoreWriter(root, overwrite=overwrite, pipeline=pipeline_settings())
        report = IngestReport(store=root, shard=shard, cleaned=cleaned)
        if overwrite:
            report.cleaned = [os.fspath(p) for p in writer.clean_stale()]
        _process_all(writer, report, sources, rejected, num_workers, cmap, accept_scoring_mismatch, progress)
        if shard is not None:
            for dataset in datasets:
                writer.write_shard_marker(ShardMarker(
                    dataset, shard[0], shard[1], cohort_group, len(report.written), len(report.skipped), len(report.failed)
                ))
            return report
        with index_lock(root):  # read under it: a concurrent run can no longer finalize in between and lose a group
            _finalize(writer, report, split_fractions, seed, _cohort_groups(root, datasets, cohort_group))
    return report


def _clean_if_alone(root: Path) -> list[str]:
    """Remove killed runs' temp files when no other run writes the store (theirs look the same); else nothing."""
    if not (root / "signals").is_dir():
        return []
    try:
        with store_lock(root, shared=False):
            return [os.fspath(p) for p in StoreWriter(root).clean_stale()]
    except StoreLockedError:
        return []


def _check_shard(shard: tuple[int, int], overwrite: bool) -> None:
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard must be K/N with N >= 1 and 0 <= K < N, got {k}/{n}")
    if overwrite:
        raise ValueError("--overwrite cannot be combined with --shard: the shards share one store")


def _process_all(
    writer: StoreWriter,
    report: IngestReport,
    sources: Sequence[RecordingSource],
    rejected: Sequence[tuple[str, Path, str]],
    num_workers: int,
    cmap: Mapping[str, Any] | None,
    accept_scoring_mismatch: bool,
    progress: bool,
) -> None:
    """Write every source not yet in the store; failures and warnings go into ``report``."""
    root = writer.root
    for dataset, path, reason in rejected:
        writer.record_failure(dataset, path, reason)
        report.failed[os.fspath(path)] = reason
    todo: list[RecordingSource] = []
    seen: dict[tuple[str, str], Path] = {}
    for src in sources:
        key = (src.dataset, src.recording_id)
        if key in seen:
            _fail(writer, report, src, f"{src.edf_path}: recording id {src.recording_id!r} already taken by {seen[key]}")
            continue
        seen[key] = src.edf_path
        try:
            done = writer.has_recording(src.dataset, src.recording_id)
        except ValueError as err:  # an id that cannot be a file name
            _fail(writer, report, src, f"{src.edf_path}: {err}")
            continue
        if done:
            report.skipped.append(src.recording_id)
        else:
            todo.append(src)

    def handle(src: RecordingSource, outcome: IngestOutcome) -> None:
        if outcome.written:
            report.written.append(src.recording_id)
            if outcome.warnings:
                report.warnings[src.recording_id] = list(outcome.warnings)
        else:
            _fail(writer, report, src, outcome.message)
        bar.update()

    bar = tqdm(total=len(todo), desc="preprocess", unit="rec", disable=not progress)
    job = functools.partial(
        _ingest_one, os.fspath(root), writer.pipeline, channel_map=cmap, accept_scoring_mismatch=accept_scoring_mismatch
    )
    try:
        if num_workers <= 0:
            for src in todo:
                handle(src, job(src))
        else:
            _run_parallel(todo, job, num_workers, handle, writer.has_recording)
    finally:
        bar.close()


def _finalize(
    writer: StoreWriter, report: IngestReport, split_fractions: Sequence[float], seed: int, groups: Mapping[str, str]
) -> None:
    root = writer.root
    try:
        writer.finalize(split_fractions=split_fractions, seed=seed, cohort_groups=groups)
    except ValueError as err:  # e.g. no recording in the store at all
        reasons = list(report.failed.values())
        why = f"; why: {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "") if reasons else ""
        raise IngestionError(
            root, f"cannot finalize the store: {err} ({len(report.failed)} recordings failed in this run, "
            f"reasons in {root / 'failures.jsonl'}){why}"
        ) from err
    except OSError as err:  # a full disk: the recordings written so far stay; finalizing again needs only space
        raise IngestionError(
            root, f"cannot finalize the store: {err}; the recordings written are kept, "
            f"free space and run again (finished recordings are skipped)"
        ) from err
    report.finalized = True


def finalize_store(
    output_dir: str | os.PathLike, split_fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> IngestReport:
    """Build the index and manifest of a store written in shards, once every shard has finished.

    Raises ``IngestionError`` listing the shards still missing (no marker yet), ``StoreLockedError``
    naming the shards still running. Cohort groups given to the shards are applied here.
    """
    root = Path(output_dir)
    if not (root / "signals").is_dir():
        raise IngestionError(root, "not an epoch store (no signals/ folder): nothing to finalize")
    with store_lock(root, shared=False), index_lock(root):
        writer = StoreWriter(root)
        missing = writer.missing_shards()
        if missing:
            listed = "; ".join(f"{d}: {', '.join(ks)}" for d, ks in sorted(missing.items()))
            raise IngestionError(root, f"shards still missing (no marker in {root / 'shards'}): {listed}; run them, then --finalize again")
        report = IngestReport(store=root, cleaned=[os.fspath(p) for p in writer.clean_stale()])
        groups = _cohort_groups(root, [], None)
        groups.update({m.dataset: m.cohort_group for m in writer.shard_markers() if m.cohort_group})
        _finalize(writer, report, split_fractions, seed, groups)
    return report


def _fail(writer: StoreWriter, report: IngestReport, src: RecordingSource, reason: str) -> None:
    writer.record_failure(src.dataset, src.edf_path, reason)
    report.failed[os.fspath(src.edf_path)] = reason


def _run_parallel(
    todo: Sequence[RecordingSource],
    job: Callable[[RecordingSource], IngestOutcome],
    num_workers: int,
    handle: Callable[[RecordingSource, IngestOutcome], None],
    is_written: Callable[[str, str], bool],
) -> None:
    """Run ``job`` over ``todo`` in worker processes, ``2 * num_workers`` recordings in flight.

    A worker that dies (killed for memory, a crash in native code) breaks the whole pool; the
    recordings that were in flight are then retried one at a time in a pool of their own, so only
    the one that kills its worker is recorded as failed, and the batch goes on.
    """
    pending = deque(todo)
    suspects: deque[RecordingSource] = deque()
    while pending or suspects:
        if suspects:
            src = suspects.popleft()
            if is_written(src.dataset, src.recording_id):  # finished just before the pool broke
                handle(src, IngestOutcome(True, src.recording_id))
                continue
            with ProcessPoolExecutor(max_workers=1) as pool:
                try:
                    handle(src, pool.submit(job, src).result())
                except BrokenProcessPool:
                    handle(src, IngestOutcome.failure(f"{src.edf_path}: the worker process died while processing it (out of memory?)"))
            continue
        in_flight: dict[Future, RecordingSource] = {}
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < 2 * num_workers:
                        src = pending.popleft()
                        in_flight[pool.submit(job, src)] = src
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        result = fut.result()
                        handle(in_flight.pop(fut), result)
            except BrokenProcessPool:
                suspects.extend(in_flight.values())


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
    accept_scoring_mismatch: bool = False,
    shard: tuple[int, int] | None = None,
) -> IngestReport:
    """Ingest every recording of ``dataset`` found under ``input_dir`` (registry layout) into the store.

    ``limit`` keeps the first K recordings in path order (the same K on every call, so resuming works;
    with ``shard`` the limit applies before sharding, so the shards split those K).
    """
    rejected: list[tuple[Path, str]] = []
    sources = find_recordings(dataset, resolve_input_dir(dataset, input_dir), rejected=rejected)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        sources = sources[:limit]
    if not sources:
        why = f"; {len(rejected)} EDF names did not fit the layout, e.g. {rejected[0][1]}" if rejected else ""
        raise IngestionError(
            input_dir, f"no {dataset} recordings found (layout: {config.get_dataset(dataset).edf_dir}/){why}"
        )
    return ingest_recordings(
        sources, output_dir, num_workers, channel_map, split_fractions, seed, cohort_group, overwrite, progress,
        rejected=[(dataset, path, reason) for path, reason in rejected],
        accept_scoring_mismatch=accept_scoring_mismatch, shard=shard,
    )
