"""Losses of the baseline objectives, each against a direct computation: NT-Xent, leave-one-out,
masked patch MSE and the vector quantiser (issue 7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from osf.losses.leave_one_out import LeaveOneOutLoss, leave_one_out_loss
from osf.losses.mae import masked_patch_mse, normalize_patches
from osf.losses.ntxent import nt_xent_loss
from osf.losses.vq import VectorQuantizer, codebook_stats


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- NT-Xent --------------------------------------------------------------------------------------
def _nt_xent_direct(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:  # float64
    """Textbook loop: 2B queries, positive = other view, all other 2B - 2 projections negatives."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z.shape[0]
    b = n // 2
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / sum(sims))
    return torch.tensor(total / n, dtype=torch.float64)


def test_nt_xent_equals_direct_computation():
    z1, z2 = torch.randn(5, 8, generator=_gen(1)), torch.randn(5, 8, generator=_gen(2))
    for t in (0.1, 0.5):
        torch.testing.assert_close(nt_xent_loss(z1, z2, t).double(), _nt_xent_direct(z1, z2, t), rtol=1e-5, atol=1e-5)
    # Aligned views score far better than unrelated ones, and the loss is symmetric in the views.
    assert nt_xent_loss(z1, z1 + 0.01 * z2) < 0.1 * nt_xent_loss(z1, z2)
    torch.testing.assert_close(nt_xent_loss(z1, z2), nt_xent_loss(z2, z1))
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z1, z2[:4])


# --- leave-one-out --------------------------------------------------------------------------------
def _loo_direct(emb: torch.Tensor, present: torch.Tensor, temperature: float) -> list[float]:
    """Per-modality loss by loops, straight from the definition in the module docstring (both directions)."""
    z = F.normalize(emb.double(), dim=-1)
    n_mod, batch, _ = z.shape
    out = []
    for k in range(n_mod):
        targets, valid = {}, {}
        for b in range(batch):
            others = [z[j, b] for j in range(n_mod) if j != k and present[j, b]]
            valid[b] = bool(others)
            if others:
                targets[b] = F.normalize(torch.stack(others).sum(0), dim=0)
        to_target, to_anchor = [], []
        for b in range(batch):
            if not (present[k, b] and valid[b]):
                continue
            denom = sum(math.exp(float(z[k, b] @ targets[c]) / temperature) for c in range(batch) if valid[c])
            to_target.append(-math.log(math.exp(float(z[k, b] @ targets[b]) / temperature) / denom))
            denom = sum(math.exp(float(targets[b] @ z[k, c]) / temperature) for c in range(batch) if present[k, c])
            to_anchor.append(-math.log(math.exp(float(targets[b] @ z[k, b]) / temperature) / denom))
        n = len(to_target)
        out.append((sum(to_target) / n + sum(to_anchor) / n) / 2 if n else 0.0)
    return out


def test_leave_one_out_equals_direct_computation_with_missing_modalities():
    emb = torch.randn(3, 6, 5, generator=_gen(3))
    present = torch.ones(3, 6, dtype=torch.bool)
    present[1, 0] = False  # cardiac missing: epoch 0 is no cardiac anchor, its target for others changes
    present[2, 3] = False
    present[1:, 5] = False  # only one modality left: epoch 5 has no anchor and no target anywhere
    scale = torch.tensor(math.log(1 / 0.2), dtype=torch.float64)
    loss, per_mod = leave_one_out_loss(emb, present, scale)
    expected = _loo_direct(emb, present, 0.2)
    torch.testing.assert_close(per_mod.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), torch.tensor(sum(expected), dtype=torch.float64), rtol=1e-5, atol=1e-6)
    # All present: same formula, no masking.
    full = torch.ones_like(present)
    torch.testing.assert_close(leave_one_out_loss(emb, full, scale)[1].double(),
                               torch.tensor(_loo_direct(emb, full, 0.2), dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_leave_one_out_absent_modality_and_learnable_temperature_get_gradients():
    emb = torch.randn(3, 4, 8, generator=_gen(4), requires_grad=True)
    present = torch.ones(3, 4, dtype=torch.bool)
    present[1] = False  # the whole batch lacks cardiac: its term is 0, the others still train
    module = LeaveOneOutLoss(init_temperature=0.1)
    assert module.temperature == pytest.approx(0.1)
    loss, per_mod = module(emb, present)
    assert torch.isfinite(loss) and per_mod[1] == 0 and per_mod[0] > 0
    loss.backward()
    assert module.logit_scale.grad is not None and module.logit_scale.grad != 0
    assert emb.grad[0].abs().sum() > 0 and torch.all(emb.grad[1] == 0)
    with pytest.raises(ValueError, match="bool present"):
        leave_one_out_loss(emb, present.float(), module.logit_scale)


# --- masked patch MSE -------------------------------------------------------------------------------
def test_masked_patch_mse_covers_selected_tokens_and_weighted_samples_only():
    pred, target = torch.randn(2, 5, 6, generator=_gen(5)), torch.randn(2, 5, 6, generator=_gen(6))
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    expected = ((pred - target) ** 2)[mask].mean()
    torch.testing.assert_close(masked_patch_mse(pred, target, mask), expected)
    # Whatever is predicted at unselected tokens does not count.
    torch.testing.assert_close(masked_patch_mse(pred + 100 * (~mask).unsqueeze(-1), target, mask), expected)
    weight = torch.ones_like(pred)
    weight[..., :3] = 0  # e.g. half of the patch's channels absent
    torch.testing.assert_close(masked_patch_mse(pred, target, mask, weight),
                               ((pred - target) ** 2)[..., 3:][mask].mean())
    norm = masked_patch_mse(pred, target, mask, normalize_target=True)
    manual = (target - target.mean(-1, keepdim=True)) / torch.sqrt(target.var(-1, unbiased=False, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm, ((pred - manual) ** 2)[mask].mean())
    torch.testing.assert_close(normalize_patches(target, weight)[..., 3:], normalize_patches(target[..., 3:]))


# --- vector quantiser -----------------------------------------------------------------------------
def test_codebook_stats():
    perplexity, usage = codebook_stats(torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert perplexity == pytest.approx(4.0) and usage == 1.0
    perplexity, usage = codebook_stats(torch.tensor([0.0, 7.0, 0.0, 0.0]))
    assert perplexity == pytest.approx(1.0) and usage == 0.25


def test_vq_picks_nearest_code_and_passes_gradients_straight_through():
    vq = VectorQuantizer(num_codes=16, code_dim=4, commitment_weight=0.25, ema=True)
    z = torch.randn(3, 7, 4, generator=_gen(7), requires_grad=True)
    out = vq(z, update=False)
    nearest = torch.cdist(z.detach().reshape(-1, 4), vq.codebook).argmin(1)
    assert torch.equal(out.codes.reshape(-1), nearest)
    torch.testing.assert_close(out.quantized.detach(), vq.codebook[out.codes])
    w = torch.randn(3, 7, 4, generator=_gen(8))
    (out.quantized * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # identity gradient: straight-through
    z.grad = None
    vq(z, update=False).loss.backward()  # commitment: 0.25 * mean((z - sg(e))^2)
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - vq.codebook[out.codes]) / z.numel())


def test_vq_learned_codebook_gets_the_codebook_loss():
    vq = VectorQuantizer(num_codes=8, code_dim=3, ema=False)
    z = torch.randn(10, 3, generator=_gen(9))
    out = vq(z, update=False)
    e = vq.codebook.detach()[out.codes]
    torch.testing.assert_close(out.loss, F.mse_loss(e, z) * 1.25)
    out.loss.backward()
    assert vq.codebook.grad[out.codes.unique()].abs().sum() > 0


def test_vq_ema_moves_codes_to_cluster_means_and_restarts_keep_usage_high():
    torch.manual_seed(0)  # restarts draw with the global RNG
    centers = 4.0 * torch.randn(32, 8, generator=_gen(10))
    data = centers.repeat(40, 1) + 0.05 * torch.randn(32 * 40, 8, generator=_gen(11))

    def train(threshold: float) -> tuple[VectorQuantizer, float]:
        vq = VectorQuantizer(num_codes=64, code_dim=8, ema=True, decay=0.8, dead_code_threshold=threshold)
        vq.codebook.add_(20.0)  # a bad init far from the data: one code would take everything
        vq.ema_sum.copy_(vq.codebook)
        if threshold == 0:
            vq.cluster_size.fill_(1.0)
        for _ in range(15):
            vq(data[torch.randperm(data.shape[0])[:512]])
        with torch.no_grad():
            out = vq(data, update=False)
        return vq, float(out.usage)

    vq, usage = train(threshold=1.0)
    assert usage >= 0.45  # at least 29 of the 32 clusters get a code of their own
    err = torch.cdist(centers, vq.codebook).min(1).values
    assert (err < 0.3).float().mean() >= 0.9
    _, usage_without = train(threshold=0.0)
    assert usage_without < 0.15  # a handful of codes take every vector


# --- negatives gathered across ranks --------------------------------------------------------------
def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        z1 = torch.randn(8, 6, generator=_gen(20))[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        z2 = torch.randn(8, 6, generator=_gen(21))[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        loss = nt_xent_loss(z1, z2, 0.1)
        loss.backward()
        emb = torch.randn(3, 8, 6, generator=_gen(22))[:, rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        present = torch.ones(3, 8, dtype=torch.bool)
        present[1, ::4] = False
        loo, _ = leave_one_out_loss(emb, present[:, rank * 4:(rank + 1) * 4], torch.tensor(2.0))
        loo.backward()
        torch.save({"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "loo": loo.detach(), "ge": emb.grad},
                   f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still has traffic in flight
    finally:
        dist.destroy_process_group()


def test_negatives_are_gathered_across_ranks_with_gradient(tmp_path):
    """Two gloo ranks with 4 samples each give the 8-sample loss, and its gradient after DDP averaging."""
    import torch.multiprocessing as mp

    mp.start_processes(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    z1 = torch.randn(8, 6, generator=_gen(20)).requires_grad_(True)
    z2 = torch.randn(8, 6, generator=_gen(21)).requires_grad_(True)
    full = nt_xent_loss(z1, z2, 0.1)
    full.backward()
    # Each rank's loss is the global loss over its own queries; DDP averages gradients over ranks.
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach())
    torch.testing.assert_close(torch.cat([r["g1"] for r in ranks]) / 2, z1.grad)
    torch.testing.assert_close(torch.cat([r["g2"] for r in ranks]) / 2, z2.grad)
    emb = torch.randn(3, 8, 6, generator=_gen(22)).requires_grad_(True)
    present = torch.ones(3, 8, dtype=torch.bool)
    present[1, ::4] = False  # one cardiac-less epoch per rank: equal anchor counts, so ranks average exactly
    loo, _ = leave_one_out_loss(emb, present, torch.tensor(2.0))
    loo.backward()
    torch.testing.assert_close((ranks[0]["loo"] + ranks[1]["loo"]) / 2, loo.detach())
    torch.testing.assert_close(torch.cat([r["ge"] for r in ranks], dim=1) / 2, emb.grad)


def test_dead_code_restarts_follow_the_given_generator_not_the_global_rng():
    """Restart vectors come from the step's generator, so a resumed run redraws the same ones."""
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    books = []
    for global_seed in (1, 2):
        torch.manual_seed(0)
        vq = VectorQuantizer(num_codes=16, code_dim=4, dead_code_threshold=1e6)  # every code is dead
        torch.manual_seed(global_seed)  # a different global RNG state must not matter
        vq(z, update=True, generator=torch.Generator().manual_seed(7))
        books.append(vq.codebook.detach().clone())
    torch.testing.assert_close(books[0], books[1])
    assert any((books[0] == row).all(1).any() for row in z)  # restarted codes are encoder outputs
