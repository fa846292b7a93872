"""DINO, iBOT and KoLeo losses against brute-force references; centering; the same-view option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from osf.losses.dino import Centering, DINOLoss, dino_cross_entropy, view_pairs
from osf.losses.ibot import IBOTPatchLoss, random_token_mask
from osf.losses.koleo import koleo_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_dino(student, teacher, center, s_temp, t_temp, same_view):
    """Loop over (student view, teacher view) pairs, as in the DINO paper's pseudo-code."""
    total, n = 0.0, 0
    for t in range(teacher.shape[0]):
        q = F.softmax((teacher[t] - center) / t_temp, dim=-1)
        for s in range(student.shape[0]):
            if s == t and not same_view:
                continue
            total = total + torch.sum(-q * F.log_softmax(student[s] / s_temp, dim=-1), dim=-1).mean()
            n += 1
    return total / n


def test_view_pairs_same_view_option():
    with_same = view_pairs(4, 2, same_view_pairs=True)
    without = view_pairs(4, 2, same_view_pairs=False)
    assert len(with_same) == 8 and len(without) == 6
    assert (0, 0) in with_same and (1, 1) in with_same
    assert (0, 0) not in without and (1, 1) not in without and (2, 0) in without and (0, 1) in without


@pytest.mark.parametrize("same_view", [True, False])
def test_dino_loss_matches_reference(same_view):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    loss_fn = DINOLoss(16, center_momentum=0.9, same_view_pairs=same_view)
    loss_fn.centering.center.copy_(torch.randn(1, 16, generator=g))
    center = loss_fn.centering.center.clone()
    loss = loss_fn(student, teacher, 0.1, 0.04, update_center=False)
    torch.testing.assert_close(loss, _reference_dino(student, teacher, center, 0.1, 0.04, same_view))


def test_same_view_pairs_change_the_loss():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    a = DINOLoss(16, same_view_pairs=True)(student, teacher, 0.1, 0.04)
    b = DINOLoss(16, same_view_pairs=False)(student, teacher, 0.1, 0.04)
    assert not torch.isclose(a, b)


def test_dino_cross_entropy_minimised_by_matching_distribution():
    target = F.softmax(torch.tensor([[2.0, 0.0, -1.0]]), dim=-1)
    matching = dino_cross_entropy(torch.log(target) * 0.1, target, student_temp=0.1)
    other = dino_cross_entropy(torch.tensor([[0.0, 2.0, -1.0]]), target, student_temp=0.1)
    assert matching < other
    torch.testing.assert_close(matching, -(target * torch.log(target)).sum())  # entropy at the optimum


def test_centering_ema_and_collapse_prevention():
    centering = Centering(3, momentum=0.9)
    logits = torch.tensor([[4.0, 0.0, 0.0], [6.0, 0.0, 0.0]])  # teacher dominated by dimension 0
    centering.update(logits)
    torch.testing.assert_close(centering.center, 0.1 * logits.mean(0, keepdim=True))
    before = centering.teacher_probs(logits, 0.5)[:, 0].mean()
    for _ in range(50):
        centering.update(logits)
    after = centering.teacher_probs(logits, 0.5)[:, 0].mean()
    # Subtracting the running mean removes the dominant dimension's advantage: no collapse onto it.
    assert after < before and after < 0.9
    # Centering is a constant shift per dimension: it is invariant to adding the same value everywhere.
    torch.testing.assert_close(centering.teacher_probs(logits + 3.0, 0.5), centering.teacher_probs(logits, 0.5))


def test_random_token_mask_counts():
    mask = random_token_mask(6, 30, 0.3, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (6, 30)
    assert (mask.sum(1) == 9).all()
    assert not (mask[0] == mask[1]).all()  # different positions per sample
    with pytest.raises(ValueError, match="ratio"):
        random_token_mask(2, 10, 1.5)


def test_ibot_loss_matches_per_sample_reference():
    g = torch.Generator().manual_seed(2)
    b, n, k = 3, 6, 8
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[0, :1] = True
    mask[1, :4] = True  # sample 2 has no masked token and must not count
    s_all, t_all = torch.randn(b, n, k, generator=g), torch.randn(b, n, k, generator=g)
    loss_fn = IBOTPatchLoss(k)
    loss = loss_fn(s_all[mask], t_all[mask], mask.nonzero(as_tuple=True)[0], b, 0.1, 0.04, update_center=False)
    per_sample = []
    for i in range(2):
        q = F.softmax(t_all[i][mask[i]] / 0.04, dim=-1)
        per_sample.append(torch.sum(-q * F.log_softmax(s_all[i][mask[i]] / 0.1, dim=-1), dim=-1).mean())
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())
    loss_fn(s_all[mask], t_all[mask], mask.nonzero(as_tuple=True)[0], b, 0.1, 0.04, update_center=True)
    assert loss_fn.centering.center.abs().sum() > 0


def test_koleo_matches_brute_force_and_prefers_spread_features():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g)
    xn = F.normalize(x, dim=-1)
    dists = torch.cdist(xn, xn) + torch.eye(7) * 10
    reference = -torch.log(dists.min(dim=1).values + 1e-8).mean()
    torch.testing.assert_close(koleo_loss(x), reference, rtol=1e-4, atol=1e-5)
    clustered = torch.randn(7, 5, generator=g) * 0.01 + torch.ones(5)
    assert koleo_loss(clustered) > koleo_loss(x)
    with pytest.raises(ValueError, match="B >= 2"):
        koleo_loss(torch.randn(1, 5))


def _dinov2_sinkhorn(logits: torch.Tensor, temp: float, n_iter: int = 3) -> torch.Tensor:
    """DINOv2's sinkhorn_knopp_teacher, single process, written as in its repository."""
    q = torch.exp(logits / temp).t()
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(n_iter):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def test_sinkhorn_teacher_matches_dinov2_and_spreads_a_collapsed_batch():
    from osf.losses.dino import SinkhornKnopp

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 16, generator=g).clamp(-1, 1)
    torch.testing.assert_close(SinkhornKnopp().teacher_probs(logits, 0.1), _dinov2_sinkhorn(logits, 0.1))
    # every row prefers prototype 0: softmax sends the batch there, Sinkhorn-Knopp spreads it
    collapsed = logits * 0.1
    collapsed[:, 0] += 1.0
    soft = F.softmax(collapsed / 0.015, dim=-1)
    sk = SinkhornKnopp().teacher_probs(collapsed, 0.015)  # exp(t / 0.015) alone would overflow float32 here
    assert soft.mean(0)[0] > 0.99
    assert torch.isfinite(sk).all()
    torch.testing.assert_close(sk.sum(-1), torch.ones(64))
    assert sk.mean(0).max() < 2.0 / 16  # near 1/K for every prototype
    loss = DINOLoss(16, centering="sinkhorn")
    assert "centering.center" not in loss.state_dict()
    with pytest.raises(ValueError, match=r"unknown teacher centering 'sk'; choose one of \['ema', 'sinkhorn'\]"):
        DINOLoss(16, centering="sk")


def _sinkhorn_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from osf.losses.dino import SinkhornKnopp

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        logits = torch.randn(12, 8, generator=torch.Generator().manual_seed(5))
        mine = logits[:8] if rank == 0 else logits[8:]  # unequal shards
        torch.save({"probs": SinkhornKnopp().teacher_probs(mine, 0.05)}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still has traffic in flight
    finally:
        dist.destroy_process_group()


def test_sinkhorn_over_ranks_normalises_the_global_batch(tmp_path):
    """Two gloo ranks holding 8 and 4 rows get the rows of the 12-row normalisation."""
    import torch.multiprocessing as mp

    from osf.losses.dino import SinkhornKnopp

    mp.start_processes(_sinkhorn_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    shards = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["probs"] for r in range(2)]
    logits = torch.randn(12, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(torch.cat(shards), SinkhornKnopp().teacher_probs(logits, 0.05))
