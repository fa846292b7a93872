"""Schedules as functions of the step, and the teacher schedules inside step- and epoch-limited runs."""

from __future__ import annotations

import itertools
import math

import pytest
import pytorch_lightning as pl
import torch
from pretrain_utils import TINY_HEAD, TinyDataModule

from osf.models.momentum import cosine_momentum, ema_update, make_momentum_copy
from osf.utils.schedules import (
    cosine_schedule,
    linear_warmup_then_constant,
    warmup_cosine_factor,
    warmup_steps_from,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cosine_schedule_endpoints_midpoint_and_monotone():
    values = [cosine_schedule(s, 11, 0.996, 1.0) for s in range(11)]
    assert values[0] == pytest.approx(0.996) and values[-1] == pytest.approx(1.0)
    assert values[5] == pytest.approx((0.996 + 1.0) / 2)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert cosine_schedule(50, 11, 0.996, 1.0) == pytest.approx(1.0)  # past the end: stays at the end value


def test_warmup_cosine_factor_shape():
    total, warmup = 20, 5
    f = [warmup_cosine_factor(s, total, warmup, min_ratio=0.1) for s in range(total)]
    assert f[0] == pytest.approx(1 / warmup) and f[warmup - 1] == pytest.approx(1.0)
    assert all(b > a for a, b in itertools.pairwise(f[:warmup]))  # rising during warm-up
    assert f[warmup] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1)
    assert all(b <= a for a, b in itertools.pairwise(f[warmup:]))  # decaying after
    mid = warmup + (total - warmup - 1) // 2  # halfway through the decay (14 decay intervals)
    assert f[mid] == pytest.approx(0.1 + 0.9 * 0.5)


def test_linear_warmup_then_constant_and_warmup_resolution():
    assert linear_warmup_then_constant(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup_then_constant(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup_then_constant(10, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup_then_constant(3, 0, 0.04, 0.07) == pytest.approx(0.07)
    assert warmup_steps_from(200, warmup_frac=0.1) == 20 and warmup_steps_from(200, 0.1, warmup_steps=7) == 7
    with pytest.raises(ValueError, match="total_steps"):
        cosine_schedule(0, 0, 1.0, 0.0)


def test_ema_update_moves_teacher_towards_student():
    student = torch.nn.Linear(3, 2)
    teacher = make_momentum_copy(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for b, t, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    after = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)  # momentum 1: frozen
    assert all(torch.equal(a, t) for a, t in zip(after, teacher.parameters()))
    assert cosine_momentum(0, 10) == pytest.approx(0.996) and cosine_momentum(9, 10) == pytest.approx(1.0)


class _Record(pl.Callback):
    def __init__(self) -> None:
        self.momentum: list[float] = []
        self.temp: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        self.momentum.append(pl_module.momentum_at(step))
        self.temp.append(pl_module.teacher_temp_at(step))


@pytest.mark.parametrize("limit", ["steps", "epochs"])
def test_teacher_schedules_cover_the_whole_run(limit, tmp_path):
    """9 optimizer steps either as max_steps=9 or as 3 epochs of 3 batches: same curves, ending at 1.0.

    OSF's release computed the momentum horizon from the epoch count in epoch-limited runs; here the
    horizon is trainer.estimated_stepping_batches in both cases.
    """
    from osf.models import create_method

    pl.seed_everything(0)
    model = create_method("dino_ours", "vit_nano", backbone_kwargs={"seq_len": 640}, teacher_temp_warmup_frac=0.5, **TINY_HEAD)
    dm = TinyDataModule(n_train=12, batch_size=4)  # 3 batches per epoch
    record = _Record()
    kwargs = {"max_steps": 9} if limit == "steps" else {"max_epochs": 3}
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[record], **kwargs)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 9 and model.total_steps == 9
    m, t = record.momentum, record.temp
    assert m[0] == pytest.approx(0.996) and m[4] == pytest.approx(0.998) and m[8] == pytest.approx(1.0)
    warm = round(0.5 * 9)
    assert t[0] == pytest.approx(0.04) and t[warm // 2] == pytest.approx(0.04 + 0.03 * (warm // 2) / warm)
    assert t[warm] == pytest.approx(0.07) and t[8] == pytest.approx(0.07)
    assert not math.isclose(m[1], m[0])


def test_the_validation_loop_decays_its_lr_on_the_one_cosine_schedule():
    """The heads' AdamW loop (osf.downstream.selection): lr, then a half-cosine to 0 at step max_steps."""
    from osf.downstream.selection import cosine_adamw

    model = torch.nn.Linear(3, 2)
    opt, sched = cosine_adamw(model, lr=0.2, weight_decay=0.0, max_steps=8)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * min(s, 8) / 8)) for s in range(10)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[0] == 0.2 and seen[7] > 0 and seen[8] == seen[9] == 0.0  # the last trained step (7) still moves
