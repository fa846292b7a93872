"""One-page figure of a predicted night: hypnogram(s), hypnodensity and event tracks (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from osf import config
from osf.utils.atomic import atomic_path

# Conventional hypnogram order, top to bottom: wake, REM, then sleep from light to deep.
_STAGE_COLOURS = {
    "W": "#f2c14e", "REM": "#e4572e", "N1": "#9ad1d4", "N2": "#4f9dc4", "N3": "#1d3557",
    "Light": "#6bb0d0", "Deep": "#1d3557",
}


def hypnogram_order(stage_names: Sequence[str]) -> list[int]:
    """Stage indices from the top of a hypnogram to the bottom (W, REM, then the rest in order)."""
    top = [stage_names.index(s) for s in ("W", "REM") if s in stage_names]
    return top + [i for i in range(len(stage_names)) if i not in top]


def _draw_hypnogram(ax, stages: np.ndarray, stage_names: Sequence[str], hours: np.ndarray, title: str) -> None:
    order = hypnogram_order(stage_names)
    level = {stage: len(order) - 1 - rank for rank, stage in enumerate(order)}
    y = np.array([level.get(int(s), np.nan) for s in stages], dtype=float)  # unknown epochs leave gaps
    ax.step(hours, y, where="post", color="black", linewidth=0.9)
    rem = stage_names.index("REM") if "REM" in stage_names else None
    if rem is not None:
        ax.plot(hours, np.where(stages == rem, y, np.nan), color=_STAGE_COLOURS["REM"], linewidth=2.5, drawstyle="steps-post")
    ax.set_yticks([level[i] for i in order], [stage_names[i] for i in order])
    ax.set_ylim(-0.5, len(order) - 0.5)
    ax.set_title(title, loc="left", fontsize=10)


def _step(values: np.ndarray) -> np.ndarray:
    """One value per epoch edge: the last one repeated, for step plots."""
    return np.append(values, values[-1]) if len(values) else values


def _draw_scored(ax, scored: np.ndarray, stage_names: Sequence[str], hours: np.ndarray,
                 agreement: float | None, kappa: float | None) -> None:
    valid = np.asarray(scored) >= 0
    score = f"agreement {100 * agreement:.1f}%" if agreement is not None else ""
    score += f", Cohen's kappa {kappa:.3f}" if kappa is not None else ""
    _draw_hypnogram(ax, _step(np.asarray(scored)), stage_names, hours,
                    f"Scored hypnogram ({valid.sum()} scored epochs{'; ' + score if score else ''})")


def _draw_hypnodensity(ax, stage_probs: np.ndarray, stage_names: Sequence[str], hours: np.ndarray) -> None:
    order = hypnogram_order(stage_names)[::-1]  # deep sleep at the bottom of the stack
    ax.stackplot(
        hours, *[_step(stage_probs[:, i]) for i in order], step="post",
        labels=[stage_names[i] for i in order],
        colors=[_STAGE_COLOURS.get(stage_names[i], f"C{i}") for i in order],
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, reverse=True)
    ax.set_title("Hypnodensity (stage probabilities)", loc="left", fontsize=10)


def _draw_events(ax, event_probs: Mapping[str, np.ndarray], thresholds: Mapping[str, float], hours: np.ndarray) -> None:
    names = list(event_probs)
    for k, name in enumerate(names):
        base = len(names) - 1 - k
        p = _step(np.asarray(event_probs[name], dtype=float))
        ax.fill_between(hours, base, base + 0.9 * p, step="post", color=f"C{k}", alpha=0.8, linewidth=0)
        ax.hlines(base + 0.9 * thresholds.get(name, 0.5), 0, hours[-1], color="grey", linewidth=0.6, linestyle=":")
    ax.set_yticks([len(names) - 1 - k + 0.45 for k in range(len(names))], names)
    ax.set_ylim(0, len(names))
    ax.set_title("Event probabilities (dotted: decision threshold)", loc="left", fontsize=10)


def plot_night(
    path: str | Path,
    stage_probs: np.ndarray,
    stage_names: Sequence[str],
    predicted: np.ndarray | None = None,
    scored: np.ndarray | None = None,
    event_probs: Mapping[str, np.ndarray] | None = None,
    agreement: float | None = None,
    kappa: float | None = None,
    event_thresholds: Mapping[str, float] | None = None,
    title: str = "",
    epoch_sec: float = config.EPOCH_SEC,
) -> Path:
    """Write the night's figure to ``path`` (PNG, atomically) and return the path."""
    stage_probs = np.asarray(stage_probs, dtype=float)
    n = len(stage_probs)
    predicted = stage_probs.argmax(axis=1) if predicted is None else np.asarray(predicted)
    hours = np.arange(n + 1) * epoch_sec / 3600.0  # epoch edges
    event_probs = dict(event_probs or {})
    # One panel per row: (how to draw it, relative height).
    rows = [(lambda ax: _draw_hypnogram(ax, _step(predicted), stage_names, hours, "Predicted hypnogram"), 1.3)]
    if scored is not None:
        rows.append((lambda ax: _draw_scored(ax, scored, stage_names, hours, agreement, kappa), 1.3))
    rows.append((lambda ax: _draw_hypnodensity(ax, stage_probs, stage_names, hours), 1.3))
    if event_probs:
        rows.append((lambda ax: _draw_events(ax, event_probs, event_thresholds or {}, hours), 0.35 * len(event_probs) + 0.6))

    fig = Figure(figsize=(12, 1.2 + sum(h for _, h in rows) * 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, sharex=True, gridspec_kw={"height_ratios": [h for _, h in rows]})
    axes = np.atleast_1d(axes)
    if title:
        fig.suptitle(title, fontsize=11)
    for ax, (draw, _) in zip(axes, rows):
        draw(ax)
    axes[-1].set_xlabel("hours from recording start")
    axes[-1].set_xlim(0, hours[-1] if n else 1)

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)
