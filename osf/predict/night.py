"""Stage one night end to end: EDF -> ingestion -> classifier -> per-epoch table, hypnogram files,
summary statistics, QC report and a figure.

Entry point: :func:`predict_night` (``main_pipelines/main_predict.py`` is its command-line wrapper).
"""

from __future__ import annotations

import datetime
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import torch

from osf import config
from osf.backbone.checkpoint import CheckpointError
from osf.datasets.channelset import ChannelSet
from osf.datasets.io.edf import read_edf_header
from osf.downstream.classifier import VALIDATION_KEY, SleepClassifier, closest_validated_preset, load_classifier
from osf.downstream.features import pooled_width
from osf.downstream.metrics import confusion_matrix, kappa_from_confusion
from osf.predict.plausibility import LightsWindow, detect_lights, given_window, parse_lights, plausibility_flags
from osf.predict.plots import plot_night
from osf.predict.report import MissingChannelsWarning, build_qc_report, require_some_channels
from osf.predict.summary import stage_agreement_statistics, summarize_night
from osf.predict.writers import (
    write_bids_hypnogram,
    write_edf_hypnogram,
    write_json,
    write_nsrr_xml,
    write_table,
)

STAGE_TASK = "stage"  # classifier task keys are the store's label columns
TASK_NAMES: dict[str, str] = {column: task for task, column in config.LABEL_COLUMNS.items()}  # "arousal" -> "Arousal"
HYPNOGRAM_FORMATS: tuple[str, ...] = ("xml", "edf")


@dataclass
class NightPrediction:
    """What :func:`predict_night` computed for one night, and the files it wrote."""

    source: Path
    stage_names: list[str]
    stage_probs: np.ndarray  # [n_epochs, n_stages]
    stages: np.ndarray  # [n_epochs] argmax of stage_probs
    event_probs: dict[str, np.ndarray]  # task name ("Arousal") -> [n_epochs] P(event in the epoch)
    event_thresholds: dict[str, float]  # task name -> probability at which an epoch counts as an event
    scored_stages: np.ndarray | None  # [n_epochs] in the classifier's stage space, -1 unknown
    summary: dict
    qc: dict
    start_time: datetime.datetime | None = None  # clock time of the first epoch kept (None when anonymised)
    files: dict[str, Path] = field(default_factory=dict)
    first_epoch: int = 0  # epochs before lights off that --lights trimmed away (onsets count from the EDF start)

    @property
    def n_epochs(self) -> int:
        """Number of 30 s epochs."""
        return len(self.stages)


@torch.inference_mode()
def run_classifier(
    classifier: SleepClassifier, signals: np.ndarray, channel_mask: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Class probabilities per task over all epochs of a night, in batches."""
    classifier.eval().to(device)
    channel_mask = np.asarray(channel_mask, dtype=bool)
    if len(getattr(classifier, "sequence_heads", ())):  # context heads read the whole night's embeddings
        feats = [classifier.embed(torch.as_tensor(np.asarray(signals[i : i + batch_size], dtype=np.float32), device=device),
                                  torch.as_tensor(channel_mask[i : i + batch_size], device=device))
                 for i in range(0, len(signals), batch_size)]
        return {t: p.float().cpu().numpy() for t, p in classifier.night_proba(torch.cat(feats)).items()}
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(signals), batch_size):
        x = torch.as_tensor(np.asarray(signals[start : start + batch_size], dtype=np.float32), device=device)
        mask = torch.as_tensor(channel_mask[start : start + batch_size], device=device)
        for task, probs in classifier.predict_proba(x, mask).items():
            outputs.setdefault(task, []).append(probs.float().cpu().numpy())
    return {task: np.concatenate(parts) for task, parts in outputs.items()}


def stage_agreement(predicted: np.ndarray, scored: np.ndarray, n_classes: int) -> tuple[float, float, int]:
    """Epoch agreement and Cohen's kappa of a predicted hypnogram against a scored one (scored -1 ignored)."""
    valid = scored >= 0
    if not valid.any():
        return float("nan"), float("nan"), 0
    cm = confusion_matrix(scored[valid], predicted[valid], n_classes)
    return float(np.trace(cm) / cm.sum()), kappa_from_confusion(cm), int(valid.sum())


def _to_stage_space(stages_5: np.ndarray, stage_names: Sequence[str]) -> np.ndarray:
    """Scored 5-class stages (-1 unknown) in the classifier's stage space."""
    stages_5 = np.asarray(stages_5).astype(np.int64)
    if list(stage_names) == list(config.STAGE_NAMES_5):
        return stages_5
    if list(stage_names) == list(config.STAGE_NAMES_4):
        return np.vectorize(config.STAGE_5_TO_4.__getitem__, otypes=[np.int64])(stages_5)
    raise ValueError(f"cannot compare scored 5-class stages with a classifier staging {list(stage_names)}")


def _load_classifier_file(path: str | Path, device: str) -> SleepClassifier:
    """``load_classifier`` with every refusal as one line naming the file (heads of the wrong shape included)."""
    try:
        return load_classifier(path, map_location=device)
    except CheckpointError:
        raise
    except (ValueError, RuntimeError) as err:  # SleepClassifier's own checks; nn.Linear.load_state_dict
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ValueError(f"classifier file {path}: {detail}") from err


def check_heads(clf: SleepClassifier, source: str) -> None:
    """Refuse heads that cannot take the backbone's features or do not give one output per label name.

    Run when the classifiers are loaded, so a wrong file fails in a line before any night is read.
    """
    width = pooled_width(clf.backbone, clf.pooling)  # what the heads receive
    for task, head in clf.heads.items():
        n_in, n_out = getattr(head, "in_features", width), getattr(head, "out_features", None)
        names = list(clf.label_names.get(task, []))
        if n_in != width:
            raise ValueError(
                f"{source}: head {task!r} takes {n_in} features but its backbone gives {width} ({clf.pooling} pooling)"
            )
        if n_out is not None and n_out != len(names):
            raise ValueError(f"{source}: head {task!r} has {n_out} outputs for {len(names)} label names {names}")
        if task != STAGE_TASK and n_out not in (None, 2):
            raise ValueError(f"{source}: event head {task!r} has {n_out} classes; event heads must be binary")


def _load_classifiers(
    classifier: SleepClassifier | str | Path | Sequence[SleepClassifier | str | Path], device: str
) -> list[SleepClassifier]:
    """One classifier or several (each serving its own tasks), loaded from paths where needed."""
    items = [classifier] if isinstance(classifier, (SleepClassifier, str, Path)) else list(classifier)
    loaded = [_load_classifier_file(c, device) if isinstance(c, (str, Path)) else c for c in items]
    for i, (item, clf) in enumerate(zip(items, loaded)):
        check_heads(clf, f"classifier file {item}" if isinstance(item, (str, Path)) else f"classifier {i}")
    seen: dict[str, int] = {}
    for i, clf in enumerate(loaded):
        for task in clf.tasks:
            if task in seen:
                raise ValueError(f"task {task!r} is predicted by classifiers {seen[task]} and {i}; give each task once")
            seen[task] = i
    if STAGE_TASK not in seen:
        raise ValueError(f"no classifier has a {STAGE_TASK!r} head (tasks: {sorted(seen)}); cannot stage a night")
    return loaded


@dataclass(frozen=True)
class NightChannels:
    """Channels of a night against the classifiers' contracts (model order)."""

    present: list[str]  # carry signal in at least one epoch
    required: list[str]  # in some classifier's contract
    missing: list[str]  # required but not present


def check_channels(channel_mask: np.ndarray, classifiers: Sequence[SleepClassifier], edf: Path) -> NightChannels:
    """Refuse a night that has none of a classifier's channels; warn when it lacks some of them."""
    present = [c for c, p in zip(config.CHANNELS, channel_mask.any(axis=0)) if p]
    mask = torch.as_tensor(channel_mask)
    for clf in classifiers:
        require_some_channels(clf.missing_channels(mask), clf.channels, present, edf)
    contracts = np.logical_or.reduce([clf.channel_set.mask for clf in classifiers])
    required = list(ChannelSet.from_mask(contracts).names)
    missing = [c for c in required if c not in present]
    if missing:
        warnings.warn(
            f"{edf}: proceeding without {len(missing)} of the classifier's channels ({', '.join(missing)}); "
            "see the QC report",
            MissingChannelsWarning,
            stacklevel=3,
        )
    return NightChannels(present, required, missing)


def predict_night(
    edf: str | Path,
    classifier: SleepClassifier | str | Path | Sequence[SleepClassifier | str | Path],
    channel_map: Mapping[str, str | Sequence[str]] | None = None,
    annotations: str | Path | None = None,
    dataset: str = "generic",
    output_dir: str | Path | None = None,
    hypnogram_formats: Sequence[str] = HYPNOGRAM_FORMATS,
    event_threshold: float | None = None,
    low_confidence: float = 0.5,
    batch_size: int = 256,
    device: str = "cpu",
    accept_scoring_mismatch: bool = False,
    lights: str | None = None,
) -> NightPrediction:
    """Stage a night from an EDF and write its outputs to ``output_dir`` (when given).

    ``classifier`` is a :class:`SleepClassifier` or its file, or several of them that each serve
    their own tasks (e.g. a fine-tuned staging classifier plus linear-probe event heads); one of
    them must have a ``stage`` head. Raises ``MissingChannelsError`` when the EDF has none of a
    classifier's channels; warns (``MissingChannelsWarning``, also in the QC report) when it
    proceeds without some. ``event_threshold=None`` uses each event head's threshold chosen on
    validation (0.5 if none). ``accept_scoring_mismatch`` compares with an ``annotations`` file that
    does not fit the recording instead of refusing it (``ScoringMismatchError``). ``lights`` ("auto" or
    "HH:MM-HH:MM") keeps only the epochs between lights off and lights on (``osf.predict.plausibility``);
    the QC report's ``plausibility`` flags say when the output should not be trusted as it is. Files (all written atomically): ``<stem>_epochs.csv``,
    ``<stem>_hypnogram.xml`` / ``<stem>_hypnogram.edf``, ``<stem>_hypnogram.tsv``, ``<stem>_summary.json``, ``<stem>_qc.json``,
    ``<stem>_night.png``.
    """
    from osf.datasets.preprocess import process_recording

    edf = Path(edf)
    unknown_formats = sorted(set(hypnogram_formats) - set(HYPNOGRAM_FORMATS))
    if unknown_formats:
        raise ValueError(f"unknown hypnogram format(s) {unknown_formats}; choose from {list(HYPNOGRAM_FORMATS)}")
    classifiers = _load_classifiers(classifier, device)
    lights_spec = parse_lights(lights) if lights is not None else None

    recording = process_recording(
        edf, scoring_path=annotations, dataset=dataset, channel_map=channel_map,
        accept_scoring_mismatch=accept_scoring_mismatch,
    )
    channels = check_channels(recording.channel_mask, classifiers, edf)
    present, required, missing = channels.present, channels.required, channels.missing

    # Each classifier hides channels outside its own training contract (SleepClassifier.channel_set).
    probs: dict[str, np.ndarray] = {}
    head_thresholds: dict[str, float] = {}
    for clf in classifiers:
        probs.update(run_classifier(clf, recording.signals, recording.channel_mask, batch_size, device))
        head_thresholds.update(clf.thresholds)
    header_start = read_edf_header(edf).start_time
    window = _lights_window(lights_spec, recording, header_start)
    if window is not None:
        probs = {task: p[window.first : window.stop] for task, p in probs.items()}
    first = window.first if window is not None else 0
    stop = window.stop if window is not None else recording.n_epochs
    stage_probs = probs.pop(STAGE_TASK)
    stage_names = next(list(clf.label_names[STAGE_TASK]) for clf in classifiers if STAGE_TASK in clf.tasks)
    stages = stage_probs.argmax(axis=1)
    event_probs, thresholds = {}, {}
    for task, p in probs.items():
        if p.shape[1] != 2:
            raise ValueError(f"classifier task {task!r} has {p.shape[1]} classes; event heads must be binary")
        name = TASK_NAMES.get(task, task)
        event_probs[name] = p[:, 1]
        thresholds[name] = head_thresholds.get(task, 0.5) if event_threshold is None else event_threshold

    scored = None
    summary = summarize_night(stages, stage_names, event_probs, event_threshold=thresholds)
    summary["source"] = str(edf)
    if annotations is not None:
        scored = _to_stage_space(recording.label_array("stage"), stage_names)[first:stop]
        agreement, kappa, n_scored = stage_agreement(stages, scored, len(stage_names))
        summary["scored"] = {
            "annotations": str(annotations),
            "n_scored_epochs": n_scored,
            "agreement": agreement,
            "cohen_kappa": kappa,
            "statistics": summarize_night(scored, stage_names),
            "agreement_statistics": stage_agreement_statistics(stages, scored, stage_names),  # YASA's definitions
        }
    quality = {k: np.asarray(v)[first:stop] for k, v in recording.quality.items()}
    qc = build_qc_report(edf, recording.qc, present, missing, quality, required, stage_probs, low_confidence)
    qc["validation_match"] = _validation_match(classifiers, present)
    flags = plausibility_flags(stages, stage_names, stage_probs.max(axis=1), present, required, scored, low_confidence)
    qc["plausibility"] = flags
    qc["lights"] = window.as_dict() if window is not None else None
    qc["warnings"] = [w for w in qc["warnings"] if "stage confidence below" not in w] + list(flags.values())
    summary["lights"] = qc["lights"]
    start_time = header_start + datetime.timedelta(seconds=first * config.EPOCH_SEC) if header_start else None
    result = NightPrediction(edf, stage_names, stage_probs, stages, event_probs, thresholds, scored, summary, qc,
                             start_time=start_time, first_epoch=first)
    if output_dir is not None:
        result.files = write_night_outputs(result, output_dir, hypnogram_formats)
    return result


def _validation_match(classifiers: Sequence[SleepClassifier], present: Sequence[str]) -> dict | None:
    """How the night's channels compare with the montages the staging classifier was validated on."""
    clf = next(c for c in classifiers if STAGE_TASK in c.tasks)
    return closest_validated_preset(dict(clf.info.get(VALIDATION_KEY, {})), present, clf.channels)


def _lights_window(spec, recording, start: datetime.datetime | None) -> LightsWindow | None:
    """The lights-off / lights-on window of ``--lights`` (None: the whole recording)."""
    if spec is None:
        return None
    if spec == "auto":
        return detect_lights(recording.signals, recording.channel_mask)
    return given_window(*spec, start, recording.n_epochs)


def epoch_table(result: NightPrediction, epoch_sec: float = config.EPOCH_SEC) -> pd.DataFrame:
    """One row per epoch: onset, stage probabilities, predicted stage, event probabilities (+ scored stage)."""
    epochs = result.first_epoch + np.arange(result.n_epochs)
    table = pd.DataFrame({"epoch": epochs, "onset_s": epochs * epoch_sec})
    for i, name in enumerate(result.stage_names):
        table[f"p_{name}"] = result.stage_probs[:, i]
    table["stage"] = [result.stage_names[s] for s in result.stages]
    table["stage_index"] = result.stages
    table["stage_confidence"] = result.stage_probs.max(axis=1)
    for task, p in result.event_probs.items():
        table[f"p_{config.LABEL_COLUMNS.get(task, task)}"] = p
    if result.scored_stages is not None:
        table["scored_stage"] = [result.stage_names[s] if s >= 0 else "" for s in result.scored_stages]
        table["scored_stage_index"] = result.scored_stages
    return table


def write_night_outputs(
    result: NightPrediction,
    output_dir: str | Path,
    hypnogram_formats: Sequence[str] = HYPNOGRAM_FORMATS,
) -> dict[str, Path]:
    """Write the per-epoch CSV, hypnogram(s), summary and QC JSON and the figure; return their paths."""
    output_dir = Path(output_dir)
    stem = result.source.stem
    files = {"epochs": write_table(output_dir / f"{stem}_epochs.csv", epoch_table(result))}
    if "xml" in hypnogram_formats:
        files["hypnogram_xml"] = write_nsrr_xml(
            output_dir / f"{stem}_hypnogram.xml", result.stages, result.stage_names, start=result.start_time
        )
    if "edf" in hypnogram_formats:
        files["hypnogram_edf"] = write_edf_hypnogram(
            output_dir / f"{stem}_hypnogram.edf", result.stages, result.stage_names
        )
    files["hypnogram_tsv"] = write_bids_hypnogram(output_dir / f"{stem}_hypnogram.tsv", result.stages, result.stage_names)
    files["summary"] = write_json(output_dir / f"{stem}_summary.json", result.summary)
    files["qc"] = write_json(output_dir / f"{stem}_qc.json", result.qc)
    scored = result.summary.get("scored", {})
    files["figure"] = plot_night(
        output_dir / f"{stem}_night.png",
        result.stage_probs,
        result.stage_names,
        predicted=result.stages,
        scored=result.scored_stages,
        event_probs=result.event_probs,
        agreement=scored.get("agreement"),
        kappa=scored.get("cohen_kappa"),
        event_thresholds=result.event_thresholds,
        title=f"{result.source.name}: {result.n_epochs} epochs ({result.n_epochs * config.EPOCH_SEC / 3600:.1f} h)",
    )
    return files


def print_warnings(result: NightPrediction, stream: TextIO | None = None) -> None:
    """Print the QC report's warnings (one per line) to ``stream`` (default: stderr)."""
    for message in result.qc.get("warnings", []):
        print(f"WARNING: {message}", file=stream or sys.stderr)
