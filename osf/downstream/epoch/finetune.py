"""Full fine-tuning: backbone + linear head, separate learning rates, layer-wise decay, warm-up + cosine.

Model selection keeps the weights of the best validation score (``selection_metric``) in memory, so
no full Lightning checkpoint has to be reloaded (those are not weights-only loadable in general).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from osf.backbone.vit1d_cls import vit_layer_id as layer_id  # noqa: F401  (the backbone's rule, public here too)
from osf.downstream.classifier import load_classifier
from osf.downstream.epoch.linear_probe import selection_score
from osf.downstream.features import backbone_hash, encode, pooled_width, run_over_loader
from osf.downstream.losses import make_loss
from osf.utils.param_groups import trainable_parameters
from osf.utils.schedules import warmup_cosine_factor


def param_groups(
    backbone: nn.Module,
    head: nn.Module,
    backbone_lr: float,
    head_lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
) -> list[dict]:
    """AdamW groups: head at ``head_lr``; backbone layer ``l`` at ``backbone_lr * layer_decay**(depth+1-l)``.

    The backbone says which layer a parameter is in (``layer_id``, BEiT's layer-wise decay); which
    parameters get weight decay follows the rule of pre-training (:mod:`osf.utils.param_groups`:
    biases, norms, tokens and embeddings do not). Each group records its ``base_lr`` so the
    schedule multiplies it.
    """
    top = backbone.num_layers - 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p, decayed in trainable_parameters(backbone):
        lid = backbone.layer_id(name)
        key = (lid, not decayed)
        if key not in groups:
            lr = backbone_lr * layer_decay ** (top - lid)
            groups[key] = {"params": [], "lr": lr, "base_lr": lr, "weight_decay": weight_decay if decayed else 0.0,
                           "name": f"backbone_layer{lid}{'' if decayed else '_no_wd'}"}
        groups[key]["params"].append(p)
    out = [groups[k] for k in sorted(groups)]
    for name, params, decay in _split_by_decay(head, weight_decay):
        out.append({"params": params, "lr": head_lr, "base_lr": head_lr, "weight_decay": decay, "name": name})
    return out


def _split_by_decay(head: nn.Module, weight_decay: float) -> list[tuple[str, list[nn.Parameter], float]]:
    """The head's decayed weights (group ``head``) and its undecayed bias (``head_no_wd``), non-empty ones."""
    decayed = [p for _, p, d in trainable_parameters(head) if d]
    spared = [p for _, p, d in trainable_parameters(head) if not d]
    return [(name, params, decay) for name, params, decay in (("head", decayed, weight_decay), ("head_no_wd", spared, 0.0))
            if params]


def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``[n_rank, ...]`` over all ranks in rank order; ``n_rank`` may differ per rank.

    Validation shards are contiguous and never padded (``EvalSampler``), so their lengths differ by
    up to one epoch; ``all_gather`` needs equal shapes, hence pad to the longest shard and trim.
    Without ``torch.distributed`` (or with one process) returns ``x``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device))
    longest = int(max(int(n) for n in sizes))
    padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))]).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes)])


class FinetuneModule(pl.LightningModule):
    """Backbone + linear head trained end to end on ``batch["label"]`` (``-1`` ignored)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pooling: str = "cls",
        head_lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        layer_decay: float = 1.0,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        max_steps: int = 1000,
        loss_type: str = "ce",
        class_counts: Sequence[int] | None = None,
        selection_metric: str = "macro_f1",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(pooled_width(backbone, pooling), num_classes)
        self.num_classes = num_classes
        self.pooling = pooling
        self.head_lr, self.backbone_lr = head_lr, backbone_lr
        self.layer_decay, self.weight_decay = layer_decay, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.loss_fn = make_loss(loss_type, None if class_counts is None else torch.as_tensor(class_counts))
        self.selection_metric = selection_metric
        self.best_score = -math.inf
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict] = []
        self._val_proba: list[torch.Tensor] = []
        self._val_label: list[torch.Tensor] = []
        # Loaded backbones come in eval mode and Lightning keeps each module's mode at fit start, so
        # without this the backbone would be fine-tuned with dropout and stochastic depth switched off.
        self.train()

    def forward(self, signal: torch.Tensor, channel_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        return self.head(encode(self.backbone, signal, channel_mask, self.pooling))

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        """Loss on the labelled epochs of the batch (0 with a graph when none is labelled)."""
        signal, mask = batch["signal"], batch["channel_mask"].bool()  # the data module applied any channel preset
        label = batch["label"].long()
        keep = label >= 0
        logits = self(signal[keep], mask[keep])
        loss = self.loss_fn(logits, label[keep]) if keep.any() else logits.sum() * 0.0
        self.log("train_loss", loss, prog_bar=True, batch_size=int(keep.sum()))
        return loss

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        """Collect probabilities and labels; scored once per validation run."""
        signal, mask = batch["signal"], batch["channel_mask"].bool()
        self._val_proba.append(self(signal, mask).float().softmax(-1))
        self._val_label.append(batch["label"].long())

    def on_validation_epoch_end(self) -> None:
        """Score the whole validation set (all ranks) and keep the weights of the best score."""
        if not self._val_proba:
            return
        proba, label = torch.cat(self._val_proba), torch.cat(self._val_label)
        self._val_proba, self._val_label = [], []
        if self.trainer.world_size > 1:  # every rank scores the full validation set
            proba, label = gather_uneven(proba), gather_uneven(label)
        if self.trainer.sanity_checking:
            return
        score = selection_score(label.cpu().numpy(), proba.cpu().numpy(), self.selection_metric)
        # every rank holds the same gathered score; sync_dist only silences the DDP warning
        self.log("val_select", score if np.isfinite(score) else -1.0, prog_bar=True, sync_dist=True)
        self.history.append({"step": int(self.global_step), f"val_{self.selection_metric}": float(score)})
        if score > self.best_score:
            self.best_score, self.best_step = float(score), int(self.global_step)
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def configure_optimizers(self) -> dict:
        """AdamW over the layer-decayed groups, warm-up + cosine stepped every optimizer step."""
        groups = param_groups(self.backbone, self.head, self.backbone_lr, self.head_lr, self.weight_decay, self.layer_decay)
        opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))
        total, warmup = max(self.max_steps, 1), self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine_factor(min(step, total - 1), total, warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def restore_best(self) -> None:
        """Load the weights of the best validation score (no-op if validation never ran)."""
        if self.best_state is not None:
            self.load_state_dict(copy.deepcopy(self.best_state))


def start_head_from_probe(module: FinetuneModule, probe_path: str, task: str) -> None:
    """LP-FT (Kumar et al., 2022): start the head at the head of a linear probe (same backbone, pooling, task).

    A randomly initialised head sends large gradients into the backbone in the first steps and distorts its
    features; started at the probe, a short fine-tuning begins where the probe ended.
    """
    where = f"--init_head {probe_path}"
    probe = load_classifier(probe_path)
    if task not in probe.heads:
        raise ValueError(f"{where}: the classifier has heads for {probe.tasks}, not {task!r}")
    if probe.pooling != module.pooling:
        raise ValueError(f"{where}: the probe reads {probe.pooling!r} features, fine-tuning uses --pooling {module.pooling}")
    head = probe.heads[task]
    if tuple(head.weight.shape) != tuple(module.head.weight.shape):
        raise ValueError(f"{where}: head shape {list(head.weight.shape)} != {list(module.head.weight.shape)}")
    if backbone_hash(probe.backbone) != backbone_hash(module.backbone):
        raise ValueError(f"{where}: the probe was trained on another backbone than the one being fine-tuned")
    module.head.load_state_dict(head.state_dict())


def predict_loader(
    model: nn.Module,
    loader: Iterable[Mapping],
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Probabilities and epoch identity for every batch of ``loader`` (``model(signal, mask) -> logits``)."""
    was_training = model.training
    model.eval().to(device)
    try:
        out = run_over_loader(loader, lambda signal, mask: model(signal, mask).float().softmax(-1), device=device)
    finally:
        model.train(was_training)
    out["proba"] = out.pop("outputs")
    return out
