"""Night models: a night's epoch embeddings -> one prediction (class probabilities or a value), trained in seconds.

- ``mean_std``: mean and standard deviation of the night's embeddings + a linear readout (baseline);
- ``stage_profile``: the night's mean stage probabilities under an epoch stage probe + a linear readout;
- ``attention``: gated attention pooling (Ilse et al. 2018) + a linear map;
- ``transformer``: a small transformer over the epoch sequence, masked mean pooling, a linear map.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from osf import tasks
from osf.downstream.metrics import binary_scalars, multiclass_scalars
from osf.downstream.night.nights import NightSet
from osf.downstream.night.tables import NightTarget
from osf.downstream.run_config import NIGHT_MODELS
from osf.downstream.selection import ValidationSelection, train_with_validation

# Night models whose readout is fitted in closed form on a pooled night vector (few nights, many features).
LINEAR_READOUT_MODELS: tuple[str, ...] = ("mean_std", "stage_profile")
# stage_profile: L2 penalty (C = 1 / this) of the epoch-level stage probe it pools.
STAGE_PROBE_PENALTY = 2.0
# mean_std readout: L2 penalties tried (ridge alpha; logistic regression C = 1 / alpha), best on validation.
READOUT_PENALTIES: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 13))


def pad_nights(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, T_max, D]`` zero-padded features and a bool ``[N, T_max]`` mask (True = real epoch)."""
    t_max = max(f.shape[0] for f in features)
    x = torch.zeros(len(features), t_max, features[0].shape[1])
    mask = torch.zeros(len(features), t_max, dtype=torch.bool)
    for i, f in enumerate(features):
        x[i, : f.shape[0]] = torch.as_tensor(f, dtype=torch.float32)
        mask[i, : f.shape[0]] = True
    return x, mask


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class NightModel(nn.Module):
    """Night embedding from its epoch embeddings, then a linear output (classes, or 1 for regression)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mean_std", d_model: int = 64, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, max_len: int = 2048, n_stages: int = 0) -> None:
        super().__init__()
        if kind not in NIGHT_MODELS:
            raise ValueError(f"unknown night model {kind!r}; choose from {list(NIGHT_MODELS)}")
        self.kind, self.config = kind, {"in_dim": in_dim, "out_dim": out_dim, "kind": kind, "d_model": d_model,
                                        "layers": layers, "heads": heads, "dropout": dropout, "max_len": max_len,
                                        "n_stages": n_stages}
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        if kind == "mean_std":
            self.out = nn.Linear(2 * in_dim, out_dim)
        elif kind == "stage_profile":  # hierarchical: epoch stage probabilities, averaged over the night
            if n_stages < 2:
                raise ValueError(f"stage_profile needs n_stages >= 2, got {n_stages}")
            self.stage_probe = nn.Linear(in_dim, n_stages)
            self.out = nn.Linear(n_stages, out_dim)
        elif kind == "attention":  # ABMIL: embed each epoch, gated attention weights, pooled embedding
            self.embed = nn.Sequential(nn.Linear(in_dim, d_model), nn.GELU(), nn.Dropout(dropout))
            self.att_v, self.att_u = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
            self.att_w = nn.Linear(d_model, 1)
            self.out = nn.Linear(d_model, out_dim)
        else:
            self.proj = nn.Linear(in_dim, d_model)
            self.pos = nn.Parameter(torch.zeros(max_len, d_model))
            nn.init.normal_(self.pos, std=0.02)
            layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.out = nn.Linear(d_model, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]`` raw embeddings, ``mask [B, T]`` True = epoch -> ``[B, out_dim]``."""
        if self.kind in LINEAR_READOUT_MODELS:
            return self.out(self.dropout(self.pool(x, mask)))
        x = (x - self.feat_mean) / self.feat_std
        if self.kind == "attention":
            h = self.embed(x)
            score = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
            weight = score.masked_fill(~mask, -torch.inf).softmax(-1)
            return self.out(self.dropout((weight.unsqueeze(-1) * h).sum(1)))
        t = x.shape[1]
        if t > self.pos.shape[0]:  # longer than any training night: positions repeat
            pos = self.pos.repeat(math.ceil(t / self.pos.shape[0]), 1)[:t]
        else:
            pos = self.pos[:t]
        h = self.encoder(self.proj(x) + pos, src_key_padding_mask=~mask)
        return self.out(self.dropout(_masked_mean(h, mask)))

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The night vector the linear readouts read: mean and std of the standardised epochs (``mean_std``), or
        the night's mean stage probabilities under the epoch stage probe (``stage_profile``: its stage fractions)."""
        x = (x - self.feat_mean) / self.feat_std
        if self.kind == "stage_profile":
            return _masked_mean(self.stage_probe(x).softmax(-1), mask)
        mean = _masked_mean(x, mask)
        var = _masked_mean((x - mean.unsqueeze(1)) ** 2, mask)
        return torch.cat([mean, var.clamp_min(1e-8).sqrt()], -1)


@dataclass
class NightFit:
    """Trained night model and how it was selected."""

    model: NightModel
    best_step: int
    best_score: float
    selection_metric: str
    regression: bool = False
    target_mean: float = 0.0  # regression: outputs are standardised targets
    target_std: float = 1.0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def _selection_metric(regression: bool, num_outputs: int | None) -> str:
    """Validation metric of a night model: -MAE (regression), AUROC (binary) or macro-F1."""
    return tasks.selection_metric("night", tasks.target_kind(num_outputs, regression))


def _selection(y: np.ndarray, pred: np.ndarray, regression: bool) -> tuple[str, float]:
    if regression:
        return "neg_mae", -float(np.mean(np.abs(pred - y)))
    if pred.shape[1] == 2:
        return "auroc", binary_scalars(y, pred, 0.5)["auroc"]
    return "macro_f1", multiclass_scalars(y, pred)["macro_f1"]


@torch.no_grad()
def predict_nights(fit: NightFit, features: Sequence[np.ndarray], batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities ``[N, C]`` or regression values ``[N]`` of nights."""
    model = fit.model.eval().to(device)
    outs = []
    for i in range(0, len(features), batch_size):
        x, mask = pad_nights(features[i: i + batch_size])
        outs.append(model(x.to(device), mask.to(device)).float().cpu())
    out = torch.cat(outs)
    if fit.regression:
        return (out.squeeze(-1) * fit.target_std + fit.target_mean).numpy().astype(np.float64)
    return out.softmax(-1).numpy().astype(np.float64)


def train_night_model(
    train: NightSet, val: NightSet, kind: str, num_classes: int | None, max_steps: int = 300, lr: float = 1e-3,
    weight_decay: float = 0.05, batch_size: int = 32, eval_every: int = 10, d_model: int = 64, seed: int = 0,
    device: str | torch.device = "cpu",
) -> NightFit:
    """Train a night model (AdamW, cosine decay) on nights; keep the step with the best validation score.

    ``num_classes=None`` is a regression (targets standardised with the training mean/std).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    regression = num_classes is None
    cat = torch.as_tensor(np.concatenate(train.features), dtype=torch.float32)
    if not torch.isfinite(cat).all():
        raise ValueError("features contain NaN/inf; check the backbone checkpoint and the input signals")
    x, mask = pad_nights(train.features)
    model = NightModel(x.shape[-1], 1 if regression else num_classes, kind, d_model=d_model,
                       max_len=max(x.shape[1], 64), n_stages=_stage_count(train) if kind == "stage_profile" else 0)
    model.feat_mean.copy_(cat.mean(0))
    model.feat_std.copy_(cat.std(0, unbiased=False).clamp_min(1e-6))
    y_mean = float(np.mean(train.y)) if regression else 0.0
    y_std = (float(np.std(train.y)) or 1.0) if regression else 1.0
    y = torch.as_tensor((train.y - y_mean) / y_std if regression else train.y,
                        dtype=torch.float32 if regression else torch.long)
    if kind == "stage_profile":
        _fit_stage_probe(model, train)
    if kind in LINEAR_READOUT_MODELS:  # few nights, many features: a regularised closed form beats SGD here
        return _fit_linear_readout(model, train, val, regression, y_mean, y_std, t0, device)
    model.to(device)
    x, mask, y = x.to(device), mask.to(device), y.to(device)
    fit = NightFit(model, 0, -math.inf, _selection_metric(regression, num_classes), regression, y_mean, y_std)
    bs = min(batch_size, len(train))

    def batch_loss() -> torch.Tensor:
        idx = torch.randperm(len(train), generator=gen)[:bs].to(device)
        out = model(x[idx], mask[idx])
        return nn.functional.mse_loss(out.squeeze(-1), y[idx]) if regression else nn.functional.cross_entropy(out, y[idx])

    def validation_score() -> float:
        return _selection(val.y, predict_nights(fit, val.features, device=device), regression)[1]

    selection = train_with_validation(model, batch_loss, validation_score, fit.selection_metric, max_steps=max_steps,
                                      eval_every=eval_every, lr=lr, weight_decay=weight_decay)
    return _finished(fit, selection, t0)


def _finished(fit: NightFit, selection: ValidationSelection, t0: float) -> NightFit:
    """``fit`` with the selected model (on the CPU, eval mode), its selection record and the training time."""
    fit.model = fit.model.cpu().eval()
    fit.best_step, fit.best_score, fit.history = selection.best_step, selection.best_score, selection.history
    fit.train_seconds = time.perf_counter() - t0
    return fit


def _stage_count(train: NightSet) -> int:
    """Stage classes of the training epochs; refuses a run whose epoch labels are not sleep stages."""
    if train.epoch_labels is None:
        raise ValueError("stage_profile needs the epochs' stage labels: run the night level with --eval_label Stage")
    labels = np.concatenate(train.epoch_labels)
    known = labels[labels >= 0]
    if np.unique(known).size < 2:
        raise ValueError(f"stage_profile: the training nights' epochs hold {np.unique(known).size} stage class(es), "
                         "need >= 2 (run the night level with --eval_label Stage)")
    return int(known.max()) + 1


def _fit_stage_probe(model: NightModel, train: NightSet) -> None:
    """``stage_profile``: an L2 logistic-regression stage probe on the training nights' standardised epochs."""
    x = (np.concatenate(train.features) - model.feat_mean.numpy()) / model.feat_std.numpy()
    labels = np.concatenate(train.epoch_labels)
    known = labels >= 0
    coef, intercept = _readout_weights(x[known], labels[known], False, STAGE_PROBE_PENALTY, 0.0, 1.0)
    weight = np.zeros((model.config["n_stages"], x.shape[1]))
    bias = np.full(model.config["n_stages"], -1e4)  # a stage absent from training never gets probability
    present = np.unique(labels[known])  # the classifier's rows, in sorted class order
    weight[present], bias[present] = coef, intercept
    with torch.no_grad():
        model.stage_probe.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.stage_probe.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


@torch.no_grad()
def _pooled(model: NightModel, features: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """The pooled night vectors that ``model.out`` reads (:meth:`NightModel.pool`)."""
    model.eval()
    out = []
    for i in range(0, len(features), batch_size):
        x, mask = pad_nights(features[i: i + batch_size])
        out.append(model.pool(x, mask))
    return torch.cat(out).numpy().astype(np.float64)


def _fit_linear_readout(model: NightModel, train: NightSet, val: NightSet, regression: bool, y_mean: float,
                        y_std: float, t0: float, device: str | torch.device) -> NightFit:
    """Linear readouts: ridge / L2 logistic regression (scikit-learn) on the pooled vectors, penalty picked on val.

    The pooled vectors' standardisation is folded into ``model.out``, so the model applies to raw embeddings.
    """
    model.cpu()
    z = _pooled(model, train.features)
    centre, scale = z.mean(0), z.std(0) + 1e-6
    zs = (z - centre) / scale
    fit = NightFit(model, 0, -math.inf, _selection_metric(regression, model.config["out_dim"]), regression, y_mean, y_std)
    selection = ValidationSelection.start(model, fit.selection_metric)
    for step, alpha in enumerate(READOUT_PENALTIES, 1):
        coef, bias = _readout_weights(zs, train.y, regression, alpha, y_mean, y_std)
        w = coef / scale
        with torch.no_grad():
            model.out.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            model.out.bias.copy_(torch.as_tensor(bias - w @ centre, dtype=torch.float32))
        _, score = _selection(val.y, predict_nights(fit, val.features, device=device), regression)
        selection.record(model, step, score, penalty=float(alpha))
    selection.restore_best(model)
    return _finished(fit, selection, t0)


def _readout_weights(zs: np.ndarray, y: np.ndarray, regression: bool, alpha: float, y_mean: float, y_std: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[C, F]`` and bias ``[C]`` of ridge (regression) or L2 logistic regression with penalty ``alpha``."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if regression:
        est = Ridge(alpha=alpha).fit(zs, (y - y_mean) / y_std)
        return est.coef_[None, :], np.atleast_1d(est.intercept_)
    est = LogisticRegression(C=1.0 / alpha, max_iter=5000).fit(zs, y)
    coef, bias = est.coef_, est.intercept_
    if coef.shape[0] == 1:  # binary: logits (0, w.z + b) give the same softmax as sigmoid(w.z + b)
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, bias]
    return coef, bias


def save_night_model(fit: NightFit, path: Path, target: NightTarget, class_names: tuple[str, ...] | None,
                     threshold: float | None, metadata: dict) -> Path:
    """A weights-only loadable dict: state, constructor config, target and class names, threshold."""
    from osf.utils.atomic import atomic_path

    payload = {"state_dict": fit.model.state_dict(), "config": fit.model.config,
               "target": {"variable": target.variable, "threshold": target.threshold},
               "class_names": list(class_names) if class_names else None, "threshold": threshold,
               "regression": fit.regression, "target_mean": fit.target_mean, "target_std": fit.target_std,
               "backbone_metadata": {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_night_model(path: str | Path) -> NightFit:
    """Read :func:`save_night_model` output (``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = NightModel(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (OSError, EOFError, KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable night model: {err}") from err
    return NightFit(model.eval(), 0, math.nan, "", payload["regression"], payload["target_mean"], payload["target_std"])
