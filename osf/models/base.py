"""Shared LightningModule of every self-supervised method (solo-learn style).

``MethodConfig`` is the typed configuration every method's own config extends (a dataclass next to
the method, registered as its ``config_type``): the one place its defaults live, from which
``create_method`` and the ``main_pretrain.py`` flags are built.

``PretrainModule`` owns what all methods share: the backbone (``self.backbone``, built from
``cfg.backbone`` so a checkpoint can rebuild it), AdamW parameter groups, the
warm-up + cosine LR as a function of the optimizer step and ``trainer.estimated_stepping_batches``,
gradient clipping, the momentum teacher update, a per-step seeded view generator, the non-finite
loss guard, logging, an online linear probe on detached CLS features, backbone export, and the
learning diagnostics' hook (:meth:`diagnostic_metrics`, see :mod:`osf.models.diagnostics`).

A method subclass implements :meth:`ssl_step` (views, heads, loss) and, if it has a momentum
teacher, sets ``self.teacher_backbone`` and overrides :meth:`momentum_pairs`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from osf.backbone.vit1d_cls import BackboneConfig, create_backbone
from osf.models.diagnostics import embedding_metrics
from osf.models.momentum import cosine_momentum, ema_update
from osf.utils.config_fields import option, to_record, with_overrides
from osf.utils.param_groups import trainable_parameters
from osf.utils.schedules import warmup_cosine_factor, warmup_steps_from

__all__ = ["WHICH", "MethodConfig", "NonFiniteLossError", "PretrainModule", "SSLStepOutput", "param_groups"]

WHICH: tuple[str, ...] = ("teacher", "student")  # the backbones a method exports
DEFAULT_PROBE_CLASSES = 5  # sleep stages, when the data module does not say


@dataclass
class MethodConfig:
    """Settings every method shares: the backbone, AdamW, the LR schedule, the teacher EMA, the probe.

    The defaults are the baselines' (MAE / MoCo v3 AdamW recipe for ViTs: lr 1.5e-4, betas (0.9, 0.95),
    weight decay 0.05) with a short warm-up and clipping; a method's config overrides what differs.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # the backbone trained
    lr: float = option(1.5e-4, help="peak learning rate", group="optimisation")
    min_lr_ratio: float = option(0.0, help="final LR as a fraction of --lr (cosine end point)")
    weight_decay: float = option(0.05, help="AdamW weight decay")
    weight_decay_on_all: bool = option(False, help="decay every parameter (OSF's release) instead of sparing biases, "
                                                   "norms, position embedding and CLS/mask tokens")
    betas: tuple[float, float] = option((0.9, 0.95), help="AdamW betas")
    # OSF's release states no LR warm-up; a short linear warm-up protects AdamW's first steps.
    warmup_frac: float = option(0.05, help="fraction of the optimizer steps spent in linear LR warm-up")
    warmup_steps: int | None = option(None, help="LR warm-up length in steps (overrides --warmup_frac)")
    grad_clip: float | None = option(3.0, help="global gradient-norm clipping (0 disables)")
    momentum_base: float = option(0.996, help="teacher EMA momentum at step 0 (cosine to --momentum_final)")
    momentum_final: float = option(1.0, help="teacher EMA momentum at the last step")
    probe_num_classes: int | None = option(None, help="classes of the online probe (None: the data's, else 5)", cli=False)
    probe_lr: float = option(1e-3, help="constant learning rate of the online linear probe")
    seed: int = option(0, help="seeds weights, data order and views", group="optimisation")
    total_steps: int | None = option(None, help="optimizer steps of the run (None: the Trainer's)", cli=False)
    compile_backbone: bool = option(False, help="torch.compile the backbone's encoder", flag="compile", group="model")


class NonFiniteLossError(FloatingPointError):
    """Raised (on every rank at once) when the training loss is NaN or infinite."""


@dataclass
class SSLStepOutput:
    """What a method's step returns: the loss, scalars to log, and features for the online probe."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)
    probe_features: torch.Tensor | None = None  # [B, width], detached by the base class


def param_groups(modules: dict[str, nn.Module], weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
    """AdamW groups: decayed weights and undecayed biases/norms/embeddings/tokens (or all decayed)."""
    decay, no_decay, seen = [], [], set()
    for module in modules.values():
        for _, p, decayed in trainable_parameters(module):  # the rule of osf.utils.param_groups
            if id(p) in seen:
                continue
            seen.add(id(p))
            (decay if decay_all or decayed else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


class PretrainModule(pl.LightningModule):
    """Base of the SSL methods; see the module docstring for what it owns."""

    method_name: str = "base"  # set by @register_method
    config_type: ClassVar[type[MethodConfig]] = MethodConfig  # the method's own config (a MethodConfig subclass)
    # Attribute holding each exportable backbone; "teacher" falls back to "student" when absent.
    backbone_attributes: ClassVar[dict[str, str]] = {"student": "backbone", "teacher": "teacher_backbone"}
    # How the method pools an epoch's tokens into the embedding it trains ("cls" or "mean" of patch
    # tokens); the learning diagnostics measure that embedding.
    embedding_pooling: str = "cls"

    def __init__(self, cfg: MethodConfig | None = None, **fields: Any) -> None:
        """Build from ``cfg`` (default: the method's ``config_type()``), ``fields`` overriding single fields."""
        super().__init__()
        cfg = with_overrides(cfg if cfg is not None else self.config_type(), fields)
        if not isinstance(cfg, self.config_type):
            raise TypeError(f"{type(self).__name__} takes a {self.config_type.__name__}, got {type(cfg).__name__}")
        self.cfg = self.prepare_config(cfg)
        # hparams hold the plain record of the config: checkpoints carry it, weights-only loadable.
        self.save_hyperparameters(to_record(self.cfg))
        self.backbone = self.build_backbone().freeze_unused_()  # DDP: no trainable parameter without a gradient
        self.teacher_backbone: nn.Module | None = None
        self.probe = nn.Linear(self.backbone.width, self.cfg.probe_num_classes or DEFAULT_PROBE_CLASSES)
        self._compiled: dict[int, Any] = {}
        self.run_config: dict[str, Any] | None = None  # record of the run's PretrainConfig, stored in checkpoints
        self._val_sums: torch.Tensor | None = None  # this rank's validation sums (on_validation_epoch_start)

    def prepare_config(self, cfg: MethodConfig) -> MethodConfig:
        """The config the module is built from (a method may derive backbone settings from its own)."""
        return cfg

    # --- construction -------------------------------------------------------------------------------
    @property
    def backbone_name(self) -> str:
        """Registered name of the backbone size."""
        return self.cfg.backbone.name

    @property
    def backbone_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments of the backbone besides its name."""
        return self.cfg.backbone.constructor_kwargs()

    def build_backbone(self, **overrides: Any) -> nn.Module:
        """A fresh backbone from ``cfg.backbone`` (``overrides`` win)."""
        return create_backbone(self.backbone_name, **{**self.backbone_kwargs, **overrides})

    def encode(self, module: nn.Module, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """``module.forward_encoding(x, **kwargs)``, through ``torch.compile`` when ``compile_backbone``."""
        if not self.cfg.compile_backbone:
            return module.forward_encoding(x, **kwargs)
        fn = self._compiled.get(id(module))
        if fn is None:
            fn = self._compiled[id(module)] = torch.compile(module.forward_encoding)
        return fn(x, **kwargs)

    @property
    def width(self) -> int:
        """Embedding width of the backbone."""
        return int(self.backbone.width)

    @property
    def has_teacher(self) -> bool:
        """Whether the method keeps a momentum teacher backbone."""
        return self.teacher_backbone is not None

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher, student) module pairs updated by EMA after each optimizer step."""
        return []

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules whose parameters the optimizer updates (the probe has its own group)."""
        return {name: m for name, m in self.named_children() if name != "probe" and not name.startswith("teacher")}

    # --- schedules (explicit functions of the step) --------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (from the trainer when attached)."""
        if self.cfg.total_steps is not None:
            return int(self.cfg.total_steps)
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError("total_steps is unknown: attach a Trainer or pass total_steps=")
        total = trainer.estimated_stepping_batches
        if total == float("inf") or total <= 0:
            raise ValueError("the run has no finite length: set max_steps or max_epochs")
        return int(total)

    def momentum_at(self, step: int) -> float:
        """Teacher EMA momentum used for the update after optimizer step ``step`` (0-based)."""
        return cosine_momentum(min(step, self.total_steps - 1), self.total_steps, self.cfg.momentum_base, self.cfg.momentum_final)

    def lr_factor(self, step: int) -> float:
        """LR multiplier at optimizer ``step``."""
        total = self.total_steps
        warmup = warmup_steps_from(total, self.cfg.warmup_frac, self.cfg.warmup_steps)
        return warmup_cosine_factor(min(step, total - 1), total, warmup, self.cfg.min_lr_ratio)

    # --- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with decay/no-decay groups + probe group; LambdaLR stepping every optimizer step."""
        cfg = self.cfg
        groups = param_groups(self.trainable_modules(), cfg.weight_decay, cfg.weight_decay_on_all)
        for g in groups:
            g["lr"] = cfg.lr
        groups.append({"params": list(self.probe.parameters()), "weight_decay": 0.0, "lr": cfg.probe_lr, "name": "probe"})
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        # The probe keeps a constant LR; the backbone and heads follow warm-up + cosine.
        lambdas = [functools.partial(_lr_factor_of, self)] * (len(groups) - 1) + [_constant_one]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_train_start(self) -> None:
        """Apply this run's learning rates: a checkpoint restores its optimizer and scheduler with the lr of the
        run that wrote it, which differs when the run resumes at another global batch (``--lr_base_batch``)."""
        if self._trainer is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            groups = scheduler.optimizer.param_groups
            base = [self.cfg.probe_lr if g.get("name") == "probe" else self.cfg.lr for g in groups]
            scheduler.base_lrs = base
            for group, lr, factor in zip(groups, base, scheduler.lr_lambdas):
                group["initial_lr"] = lr
                group["lr"] = lr * factor(scheduler.last_epoch)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip the global grad norm to ``grad_clip`` (owned by the method, not the Trainer flags)."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.cfg.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # --- views RNG ------------------------------------------------------------------------------------
    def view_generator(self, device: torch.device, batch_idx: int, stage: str = "train") -> torch.Generator:
        """Generator for this batch's views, seeded from (seed, rank, step, batch): resumes exactly, also under DDP."""
        rank = self.global_rank if self._trainer is not None else 0
        step = self.global_step if stage == "train" else -1
        stage_id = {"train": 0, "val": 1}.get(stage, 2)
        seed = hash((int(self.cfg.seed), rank, step, batch_idx, stage_id)) & 0x7FFF_FFFF_FFFF_FFFF
        return torch.Generator(device=device).manual_seed(seed)

    # --- steps ----------------------------------------------------------------------------------------
    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """Method-specific views + forward + loss. ``update_state`` is False in validation (no centers)."""
        raise NotImplementedError

    def _probe(self, features: torch.Tensor | None, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(loss, correct, labelled)`` of the online probe on detached ``features`` (no logging, no collective)."""
        if features is None:
            zero = torch.zeros((), device=self.device)
            return zero, zero, 0
        logits = self.probe(features.detach().float())
        labels = batch.get("label")
        if labels is None:
            # Keep the probe in the graph so DDP (no find_unused_parameters) sees a gradient for it.
            return 0.0 * logits.sum(), logits.new_zeros(()), 0
        labels = labels.long().clone()
        labels[(labels < 0) | (labels >= logits.shape[1])] = -1
        valid = labels >= 0
        n_valid = int(valid.sum())
        if n_valid == 0:
            return 0.0 * logits.sum(), logits.new_zeros(()), 0
        loss = F.cross_entropy(logits, labels, ignore_index=-1)
        return loss, (logits.argmax(1)[valid] == labels[valid]).sum().float(), n_valid

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """SSL loss (+ probe loss on detached features); stops every rank on a non-finite loss."""
        out = self.ssl_step(batch, self.view_generator(batch["signal"].device, batch_idx, "train"), update_state=True)
        finite = bool(torch.isfinite(out.loss.detach()))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"{self.method_name}: non-finite training loss at step {self.global_step} (batch {batch_idx}); "
                "stopping without saving, so the last checkpoint written is the last good one"
            )
        batch_size = batch["signal"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch_size)
        for key, value in out.logs.items():
            self.log(f"train/{key}", value, batch_size=batch_size)
        probe_loss, correct, labelled = self._probe(out.probe_features, batch)
        if labelled:
            self.log("train/probe_loss", probe_loss, batch_size=labelled)
            self.log("train/probe_acc", correct / labelled, batch_size=labelled)
        return out.loss + probe_loss

    def on_validation_epoch_start(self) -> None:
        """Zero this rank's validation sums (loss x epochs, epochs, probe loss x labelled, labelled, correct)."""
        self._val_sums = torch.zeros(5, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """SSL loss with fixed views and no state updates, plus probe accuracy, summed on this rank.

        Nothing here all-reduces: ranks may hold uneven validation shards (one more batch on one rank),
        so a collective inside a step would leave the other rank waiting. The sums are reduced once, on
        every rank, in :meth:`on_validation_epoch_end`.
        """
        out = self.ssl_step(batch, self.view_generator(batch["signal"].device, batch_idx, "val"), update_state=False)
        n = batch["signal"].shape[0]
        probe_loss, correct, labelled = self._probe(out.probe_features, batch)
        if self._val_sums is None:  # called outside a validation loop
            self.on_validation_epoch_start()
        self._val_sums += torch.stack([out.loss.detach().double() * n, torch.tensor(float(n), device=self.device).double(),
                                       probe_loss.detach().double() * labelled,
                                       torch.tensor(float(labelled), device=self.device).double(), correct.double()])
        return out.loss

    def on_validation_epoch_end(self) -> None:
        """One sum over ranks of the validation sums (every rank calls it once), then ``val/*`` logged."""
        sums, self._val_sums = self._val_sums, None
        if sums is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.clone(), reduce_op="sum")
        loss_sum, n, probe_sum, labelled, correct = (float(v) for v in sums)
        if n:
            self.log("val/loss", loss_sum / n, prog_bar=True)
        if labelled:
            self.log("val/probe_loss", probe_sum / labelled)
            self.log("val/probe_acc", correct / labelled, prog_bar=True)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Optimizer step, then the EMA teacher update for that step.

        Done here rather than in ``on_train_batch_end`` because checkpoint callbacks run before the
        module's batch-end hook: a checkpoint would hold a teacher one update behind its student.
        """
        step = self.global_step  # 0-based index of the step being taken
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        pairs = self.momentum_pairs()
        if pairs:
            momentum = self.momentum_at(step)
            for teacher, student in pairs:
                ema_update(teacher, student, momentum)
            self.log("train/teacher_momentum", momentum, batch_size=1)

    # --- learning diagnostics (osf.models.diagnostics) ----------------------------------------------
    def pooled_embedding(self, module: nn.Module, x: torch.Tensor, channel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, width]`` embedding of ``x`` by ``module`` pooled as the method trains it (``embedding_pooling``)."""
        # Not through torch.compile: a batch of another size would recompile the encoder.
        cls, patches = module.forward_encoding(x, channel_mask=channel_mask)
        return patches.mean(1) if self.embedding_pooling == "mean" else cls

    def diagnostic_embeddings(self, x: torch.Tensor, channel_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Pooled embeddings by metric prefix: ``""`` the exported backbone (teacher if any), ``"student_"``."""
        out = {"": self.pooled_embedding(self.teacher_backbone if self.has_teacher else self.backbone, x, channel_mask)}
        if self.has_teacher:
            out["student_"] = self.pooled_embedding(self.backbone, x, channel_mask)
        return out

    def head_diagnostics(self, embeddings: dict[str, torch.Tensor]) -> dict[str, float]:
        """Method-specific diagnostics from :meth:`diagnostic_embeddings` (DINO: softmax entropies)."""
        return {}

    def diagnostic_warmup_steps(self) -> int:
        """Optimizer steps before which collapse signals are not judged (the LR warm-up)."""
        return warmup_steps_from(self.total_steps, self.cfg.warmup_frac, self.cfg.warmup_steps)

    @torch.no_grad()
    def diagnostic_metrics(self, batch: dict[str, Any]) -> dict[str, float]:
        """RankMe and embedding std of every diagnosed backbone on ``batch``, plus :meth:`head_diagnostics`."""
        with _eval_mode(self):
            embeddings = self.diagnostic_embeddings(batch["signal"], batch.get("channel_mask"))
            metrics: dict[str, float] = {}
            for prefix, z in embeddings.items():
                metrics.update(embedding_metrics(z, prefix))
            metrics.update(self.head_diagnostics(embeddings))
        return metrics

    # --- checkpoints / export -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the resolved run config and what export needs to rebuild the backbone."""
        checkpoint["osf"] = {
            "method": self.method_name,
            "backbone_name": self.backbone_name,
            "backbone_kwargs": dict(self.backbone_kwargs),
            "has_teacher": self.has_teacher,
            "run_config": copy.deepcopy(self.run_config) if self.run_config is not None else None,
        }

    @classmethod
    def backbone_state_from(cls, state_dict: Mapping[str, torch.Tensor], which: str = "teacher") -> tuple[dict[str, torch.Tensor], str]:
        """``(weights, source)`` of the ``which`` backbone in a state dict of this method.

        ``source`` is the backbone found: ``"teacher"`` falls back to ``"student"`` for methods
        (or checkpoints) without one. Names are the backbone's own, as the released layout has them.
        """
        _check_which(which)
        prefixes = {name: f"{attribute}." for name, attribute in cls.backbone_attributes.items()}
        source = which if any(k.startswith(prefixes[which]) for k in state_dict) else "student"
        prefix = prefixes[source]
        # torch.compile wraps modules as `_orig_mod`; the released layout has no such level.
        state = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state_dict.items() if k.startswith(prefix)}
        return state, source

    def export_backbone_state(self, which: str = "teacher") -> dict[str, torch.Tensor]:
        """Weights of the teacher (student when there is none) or the student backbone, released names."""
        return self.backbone_state_from(self.state_dict(), which)[0]

    def export_backbone(self, which: str = "teacher") -> nn.Module:
        """A standalone copy of the teacher (student when there is none) or the student backbone."""
        _check_which(which)
        source = getattr(self, self.backbone_attributes[which], None) if self.has_teacher else self.backbone
        source = getattr(source, "_orig_mod", source)
        exported = copy.deepcopy(source).eval()
        for p in exported.parameters():
            p.requires_grad_(True)
        return exported


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (no stochastic depth) for the block, then the module's previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _check_which(which: str) -> None:
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")


def _lr_factor_of(module: PretrainModule, step: int) -> float:
    return module.lr_factor(step)


def _constant_one(step: int) -> float:
    return 1.0
