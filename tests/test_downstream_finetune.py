"""Fine-tuning optimiser: separate head/backbone learning rates, layer-wise decay, warm-up + cosine."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from osf.backbone.vit1d_cls import create_backbone
from osf.downstream.epoch.finetune import FinetuneModule, layer_id, param_groups

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nano():
    return create_backbone("vit_nano")  # depth 6


def test_layer_ids_follow_depth(nano):
    assert layer_id("pos_embedding", 6) == 0 and layer_id("to_patch_embedding.weight", 6) == 0
    assert layer_id("block0.attn.fn.to_qkv.weight", 6) == 1
    assert layer_id("block5.ff.fn.net.3.bias", 6) == 6
    assert layer_id("norm.weight", 6) == 7
    assert {layer_id(n, 6) for n, _ in nano.named_parameters()} == set(range(8))


def test_param_groups_decay_lr_with_depth_and_keep_every_parameter(nano):
    head = nn.Linear(nano.width, 4)
    groups = param_groups(nano, head, backbone_lr=1e-4, head_lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-2
    assert by_name["backbone_layer7_no_wd"]["lr"] == pytest.approx(1e-4)  # final norm: no decay of lr
    assert by_name["backbone_layer6"]["lr"] == pytest.approx(1e-4 * 0.5)
    assert by_name["backbone_layer0_no_wd"]["lr"] == pytest.approx(1e-4 * 0.5**7)
    assert all(g["weight_decay"] == 0.0 for n, g in by_name.items() if n.endswith("_no_wd"))
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(nano.parameters())) + 2
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))


def test_schedule_warms_up_then_decays(nano):
    module = FinetuneModule(nano, 4, head_lr=1e-2, backbone_lr=1e-3, warmup_steps=4, max_steps=20)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    head = next(g for g in opt.param_groups if g["name"] == "head")
    lrs = []
    for _ in range(20):
        lrs.append(head["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-2 / 4) and lrs[3] == pytest.approx(1e-2)  # linear warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:])) and lrs[-1] < 1e-3  # cosine down


def test_training_step_ignores_unknown_labels(nano):
    module = FinetuneModule(create_backbone("vit_nano"), 2)
    batch = {"signal": torch.randn(3, 12, 1920), "channel_mask": torch.ones(3, 12, dtype=torch.bool),
             "label": torch.tensor([-1, -1, -1])}
    module.log = lambda *a, **k: None
    loss = module.training_step(batch, 0)
    assert loss.item() == 0.0 and loss.requires_grad


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from osf.downstream.epoch.finetune import gather_uneven

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        n = 3 if rank == 0 else 2  # EvalSampler shards of 5 validation epochs over 2 ranks
        proba = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4) + 100 * rank
        label = torch.arange(n) + 10 * rank
        torch.save({"proba": gather_uneven(proba), "label": gather_uneven(label)}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still has traffic in flight
    finally:
        dist.destroy_process_group()


def test_validation_gather_handles_shards_of_unequal_length(tmp_path):
    """Two gloo ranks with 3 and 2 validation epochs: both see all 5, in rank order, no padding rows."""
    import torch.multiprocessing as mp

    mp.start_processes(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    expected_proba = torch.cat([torch.arange(12.0).reshape(3, 4), torch.arange(8.0).reshape(2, 4) + 100])
    expected_label = torch.tensor([0, 1, 2, 10, 11])
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(out["proba"], expected_proba)
        torch.testing.assert_close(out["label"], expected_label)


def test_loaded_backbone_is_fine_tuned_in_train_mode():
    """load_backbone returns eval-mode models; fine-tuning must not keep dropout / drop-path off."""
    backbone = create_backbone("vit_nano", drop_path_rate=0.1).eval()
    module = FinetuneModule(backbone, num_classes=4)
    assert module.backbone.training and all(m.training for m in module.backbone.modules())


# --- LP-FT: the head starts at a linear probe's -------------------------------------------------
def _probe_file(tmp_path, backbone: nn.Module, pooling: str, task: str = "stage"):
    from osf.backbone.checkpoint import backbone_metadata
    from osf.downstream.classifier import SleepClassifier, save_classifier
    from osf.downstream.features import pooled_width

    head = nn.Linear(pooled_width(backbone, pooling), 4)
    torch.nn.init.normal_(head.weight, generator=torch.Generator().manual_seed(3))
    clf = SleepClassifier(backbone, {task: head}, {task: ["W", "Light", "Deep", "REM"]}, pooling=pooling,
                          backbone_metadata=backbone_metadata(backbone, "test"))
    return save_classifier(clf, tmp_path / f"{task}_{pooling}.pt"), clf


def test_fine_tuning_starts_where_the_linear_probe_ended(tmp_path):
    from osf.downstream.epoch.finetune import start_head_from_probe

    torch.manual_seed(0)
    backbone = create_backbone("vit_pico").eval()
    path, probe = _probe_file(tmp_path, backbone, "cls_groups")
    module = FinetuneModule(copy.deepcopy(backbone), 4, pooling="cls_groups").eval()
    x, mask = torch.randn(3, 12, 1920), torch.ones(3, 12, dtype=torch.bool)
    assert not torch.allclose(module(x, mask), probe(x, mask)["stage"])  # a fresh head differs
    start_head_from_probe(module, str(path), "stage")
    torch.testing.assert_close(module(x, mask), probe(x, mask)["stage"])


def test_a_probe_of_another_backbone_pooling_or_task_is_refused(tmp_path):
    from osf.downstream.epoch.finetune import start_head_from_probe

    torch.manual_seed(0)
    backbone = create_backbone("vit_pico")
    path, _ = _probe_file(tmp_path, backbone, "cls")
    with pytest.raises(ValueError, match=r"reads 'cls' features, fine-tuning uses --pooling groups"):
        start_head_from_probe(FinetuneModule(copy.deepcopy(backbone), 4, pooling="groups"), str(path), "stage")
    with pytest.raises(ValueError, match=r"heads for \['stage'\], not 'arousal'"):
        start_head_from_probe(FinetuneModule(copy.deepcopy(backbone), 4, pooling="cls"), str(path), "arousal")
    with pytest.raises(ValueError, match="trained on another backbone"):
        start_head_from_probe(FinetuneModule(create_backbone("vit_pico"), 4, pooling="cls"), str(path), "stage")


def test_init_head_needs_fine_tuning_and_an_existing_file(tmp_path):
    from osf.downstream.run_config import resolve_downstream_config, validate_config

    cfg = resolve_downstream_config({"data_dir": ".", "output_dir": ".", "init_head": str(tmp_path / "probe.pt")})
    with pytest.raises(ValueError, match="--init_head starts fine-tuning at a probe's head: it needs --finetune_backbone"):
        validate_config(cfg)
    cfg = resolve_downstream_config({"data_dir": ".", "output_dir": ".", "init_head": str(tmp_path / "probe.pt"),
                                     "finetune_backbone": True})
    with pytest.raises(ValueError, match=r"probe.pt: no such file"):
        validate_config(cfg)
