"""Cluster-ready pre-training on CPU/gloo: no hang, no silent duplicate runs, preemption-safe, honest resume.

Multi-process runs go through :func:`run_group`: the command runs in its own process group and a run
past its timeout is killed as a group and fails the test, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from pretrain_utils import METHOD_TEST_CONFIGS, TinyDataModule, tiny_run_config

from osf.models.cluster import LaunchError, check_launch, find_resume_checkpoint, launched_processes, remove_partial_writes

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
for _name in [k for k in ENV if k.startswith(("SLURM_", "TORCHELASTIC_")) or k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")]:
    ENV.pop(_name)  # a test run inside a SLURM job or torchrun must not look launched
TINY = ["--psg_encoder_name", "vit_nano", "--batch_size", "4", "--accelerator", "cpu", "--logger", "csv",
        "--dino_out_dim", "64", "--dino_hidden_dim", "64", "--dino_bottleneck_dim", "32", "--no-progress_bar",
        "--limit_val_batches", "1", "--log_every_n_steps", "1", "--diag_every_n_steps", "0"]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), including those in their own sessions (torchrun's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every descendant (a hung rank ignores SIGTERM)."""
    for child in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_group(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group, output captured; past ``timeout`` its process tree is killed and the test
    fails."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        pytest.fail(f"hung: {' '.join(map(str, cmd))[:200]} did not end within {timeout} s; last output:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def torchrun(*args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node 2 args`` as a command."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. no collective on one rank only ----------------------------------------------------------------
def _no_hang(tmp_path: Path, methods: list[str], timeout: float) -> None:
    proc = run_group(torchrun("tests/cluster_ranks.py", str(tmp_path), *methods), timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    for method in methods:
        done = [json.loads((tmp_path / f"{method}.rank{rank}.json").read_text()) for rank in (0, 1)]
        assert done[0]["step"] == done[1]["step"] == 2, method
        assert done[0]["val_loss"] == done[1]["val_loss"]  # one reduction over both ranks' (uneven) shards
        assert done[0]["run_dir"] == done[1]["run_dir"] == str(tmp_path / method)


def test_sinkhorn_with_diagnostics_and_uneven_validation_does_not_hang(tmp_path):
    """DINO and OSF (iBOT too) with Sinkhorn centering, diagnostics on rank 0 every step, validation after every
    step with 1 batch on rank 0 and 2 on rank 1: both ranks finish with the same validation loss."""
    _no_hang(tmp_path, ["dino", "dino_ours"], timeout=240)


@pytest.mark.slow
def test_no_method_calls_a_collective_on_one_rank(tmp_path):
    """Every registered method, same setting (about 2.5 minutes on 2 CPU cores)."""
    _no_hang(tmp_path, sorted(METHOD_TEST_CONFIGS), timeout=600)


# --- 2. the launch contract ----------------------------------------------------------------------------
def test_launch_contract_in_one_line():
    assert launched_processes({}) is None
    check_launch(1, 1, {})
    check_launch(2, 1, {"WORLD_SIZE": "2"})
    check_launch(8, 4, {"SLURM_NTASKS": "32", "SLURM_JOB_NAME": "osf-pretrain"})
    check_launch(1, 1, {"SLURM_NTASKS": "32", "SLURM_JOB_NAME": "bash"})  # an interactive allocation: not launched
    with pytest.raises(LaunchError, match=r"started 2 processes \(WORLD_SIZE=2\) but --num_devices 1 x --num_nodes 1 = 1"):
        check_launch(1, 1, {"WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match=r"\(SLURM_NTASKS=16\) but --num_devices 8 x --num_nodes 4 = 32") as err:
        check_launch(8, 4, {"SLURM_NTASKS": "16", "SLURM_JOB_NAME": "osf-pretrain"})
    assert "\n" not in str(err.value)


def test_torchrun_without_num_devices_is_refused(tiny_store, tmp_path):
    """torchrun --nproc_per_node 2 without --num_devices: both ranks exit non-zero before writing anything."""
    proc = run_group(torchrun("main_pipelines/main_pretrain.py", "--data_dir", str(tiny_store), "--max_steps", "2",
                              "--output_dir", str(tmp_path / "runs"), *TINY), timeout=180)
    assert proc.returncode != 0
    line = "main_pretrain: the launcher started 2 processes (WORLD_SIZE=2) but --num_devices 1 x --num_nodes 1 = 1"
    assert proc.stdout.count(line) == 2, proc.stdout[-3000:]
    assert not (tmp_path / "runs").exists()  # no run folder, no checkpoint


# --- 3/4. one run folder; resume on another world size ---------------------------------------------------
def _csv(run_dir: Path) -> pd.DataFrame:
    newest = max((run_dir / "csv_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return pd.read_csv(newest / "metrics.csv")


def test_ranks_share_rank0_folder_and_a_one_device_resume_applies_its_own_lr(tiny_store, tmp_path):
    """2 ranks (no --run_name): one folder, named alike by both ranks. Resumed on 1 device with --lr_base_batch,
    the lr applied is the new global batch's, as config.yaml records; the data position is resharded."""
    from main_pipelines import main_pretrain
    from osf.models.pretrain_config import PretrainConfig

    runs = tmp_path / "runs"
    flags = ["--model_name", "dino", "--data_dir", str(tiny_store), "--output_dir", str(runs), "--lr", "1e-3",
             "--lr_base_batch", "8", "--ckpt_every_n_steps", "2", *TINY]
    proc = run_group([sys.executable, "main_pipelines/main_pretrain.py", "--num_devices", "2", "--max_steps", "2",
                      *flags], timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:]
    folders = re.findall(r"^run folder: (.+)$", proc.stdout, re.M)
    assert len(folders) == 2 and folders[0] == folders[1], proc.stdout[-2000:]
    assert "last checkpoint: None" not in proc.stdout
    (run_dir,) = runs.iterdir()
    assert str(run_dir) == folders[0]
    first = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert first["lr"] == pytest.approx(1e-3) and first["base_lr"] == pytest.approx(1e-3)  # 4 x 2 ranks = 8

    result = main_pretrain.main(["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), "--num_devices", "1",
                                 "--max_steps", "4", *flags])
    assert result.run_dir == run_dir
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert record["lr"] == pytest.approx(5e-4) and record["base_lr"] == pytest.approx(1e-3)  # 4 x 1 = 4 of 8
    assert record["resumed_from"] == {"checkpoint": str(run_dir / "checkpoints" / "last.ckpt"), "step": 2,
                                      "world_size": 2, "global_batch": 8, "lr": pytest.approx(1e-3)}
    cfg = PretrainConfig.from_record(record)
    assert cfg.method.lr == pytest.approx(5e-4)
    lr = _csv(run_dir).dropna(subset=["lr-AdamW/decay"]).set_index("step")["lr-AdamW/decay"]
    model = result.model
    for step in (2, 3):  # what the optimizer applied at each resumed step is this run's schedule
        assert lr.loc[step] == pytest.approx(5e-4 * model.lr_factor(step), rel=1e-6), lr
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 4
    position = next(v for k, v in ckpt["callbacks"].items() if "DataPosition" in k)
    assert position["world_size"] == 1 and position["batches"] == 4  # 2 at W=2 counted + 2 more at W=1


def test_resharded_resume_serves_each_item_of_the_epoch_once():
    """A position saved at W=2 after 3 batches, restored at W=4, 1 and 2: consumed + rest = the epoch, no repeat."""
    from torch.utils.data import DataLoader

    from osf.datasets.datamodule import TrainSampler
    from osf.utils.resumable import DataPosition

    items, batch = list(range(120)), 4

    def loader(world: int, rank: int) -> DataLoader:
        sampler = TrainSampler(items, num_replicas=world, rank=rank, seed=3)
        sampler.set_epoch(0)
        return DataLoader(items, batch_size=batch, sampler=sampler, drop_last=True)

    consumed = []
    for rank in range(2):
        it = iter(loader(2, rank))
        consumed += [i for _ in range(3) for i in next(it).tolist()]
    uninterrupted = {r: [b.tolist() for b in loader(2, r)] for r in range(2)}
    for world in (4, 1, 2):
        rest, lengths = [], []
        for rank in range(world):
            position = DataPosition()
            position.load_state_dict({"epoch": 0, "batches": 3, "world_size": 2, "batch_size": batch})
            resumed = position.wrap(lambda w=world, r=rank: loader(w, r))()
            lengths.append(len(resumed) - 3)  # before iterating: the resumed epoch's length
            batches = [b.tolist() for b in resumed]
            rest += [i for b in batches for i in b]
            if world == 2:  # the same world size: exactly the uninterrupted epoch's remaining batches
                assert batches == uninterrupted[rank][3:]
        assert not set(consumed) & set(rest) and sorted(consumed + rest) == items, world
        assert lengths == [len(rest) // world // batch] * world  # len = consumed + remaining batches


def test_rerun_of_a_named_run_resumes_where_it_stopped_without_v1_files(tmp_path):
    """A named run killed during step 4 of 6 (its last checkpoint: step 2) and started again with the same config,
    as a requeue does, resumes from last.ckpt at step 2, ends bit-identical to the uninterrupted run, and writes
    no -v1 checkpoint."""
    import pytorch_lightning as pl

    from osf.models.training import run_pretrain

    class Preempted(RuntimeError):
        pass

    class KillAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                raise Preempted("killed during step 4")

    kwargs = dict(max_steps=6, ckpt_every_n_steps=2, val_every_n_steps=2, logger="csv",
                  method_kwargs=dict(METHOD_TEST_CONFIGS["dino"]))
    straight = run_pretrain(tiny_run_config("dino", tmp_path / "a", **kwargs), datamodule=TinyDataModule())
    cfg = tiny_run_config("dino", tmp_path / "b", **kwargs)
    with pytest.raises(Preempted):
        run_pretrain(cfg, datamodule=TinyDataModule(), callbacks=[KillAt()])
    run_dir = tmp_path / "b" / "run"
    assert find_resume_checkpoint(run_dir) == run_dir / "checkpoints" / "last.ckpt"
    again = run_pretrain(cfg, datamodule=TinyDataModule())
    assert again.run_dir == run_dir
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert record["resumed_from"]["step"] == 2 and record["resumed_from"]["global_batch"] == 4
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "step00000002.ckpt", "step00000004.ckpt", "step00000006.ckpt"], names
    end = torch.load(again.last_checkpoint, weights_only=True)
    assert end["global_step"] == 6
    ref = torch.load(straight.last_checkpoint, weights_only=True)["state_dict"]
    for key, value in ref.items():
        torch.testing.assert_close(end["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert _csv(run_dir)["step"].min() >= 2  # the second attempt logs from where the first stopped


def test_resume_takes_the_newest_checkpoint_of_the_run(tmp_path):
    """last.ckpt, stepN.ckpt (a kill between the two writes) or Lightning's SIGUSR1 hpc_ckpt_N.ckpt: the newest."""
    assert find_resume_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    files = {name: tmp_path / name for name in ("checkpoints/last.ckpt", "checkpoints/step00000010.ckpt",
                                                "checkpoints/best.ckpt", "hpc_ckpt_1.ckpt")}
    for i, path in enumerate(files.values()):
        torch.save({"global_step": i}, path)
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert find_resume_checkpoint(tmp_path) == files["hpc_ckpt_1.ckpt"]
    os.utime(files["checkpoints/step00000010.ckpt"], ns=(2 * 10**18, 2 * 10**18))
    assert find_resume_checkpoint(tmp_path) == files["checkpoints/step00000010.ckpt"]
    os.utime(files["checkpoints/best.ckpt"], ns=(3 * 10**18, 3 * 10**18))  # best.ckpt may be an older step: never
    partial = tmp_path / "checkpoints" / ".last.ckpt.x1y2.tmp"  # a write killed half-way (AtomicCheckpointIO)
    partial.write_bytes(b"")
    assert find_resume_checkpoint(tmp_path) == files["checkpoints/step00000010.ckpt"]
    assert remove_partial_writes(tmp_path) == [partial] and not partial.exists()


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_whole(tmp_path):
    from osf.models.cluster import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 (pickling fails half-way, as a kill would stop the write)
        io.save_checkpoint({"global_step": 6, "w": torch.zeros(3), "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


# --- 5. throughput, SyncBatchNorm ---------------------------------------------------------------------
def test_throughput_is_logged_every_n_steps_and_summarised(tmp_path, capsys):
    from osf.models.throughput import SUMMARY_FILE
    from osf.models.training import run_pretrain

    cfg = tiny_run_config("simclr", tmp_path, max_steps=6, log_every_n_steps=2, logger="csv",
                          method_kwargs=dict(METHOD_TEST_CONFIGS["simclr"]))
    result = run_pretrain(cfg, datamodule=TinyDataModule())
    perf = _csv(result.run_dir).dropna(subset=["perf/samples_per_s"]).set_index("step")
    assert list(perf.index) == [2, 4, 6]
    assert (perf["perf/samples_per_s"] > 0).all() and (perf["perf/step_s"] > 0).all()
    assert perf["perf/data_wait_frac"].between(0, 1).all() and (perf["perf/peak_mem_gib"] > 0).all()
    # samples/s x step time = the global batch (4 on one process)
    assert (perf["perf/samples_per_s"] * perf["perf/step_s"]).to_numpy() == pytest.approx([4, 4, 4], rel=1e-6)

    summary = json.loads((result.run_dir / SUMMARY_FILE).read_text())
    assert summary["memory"] == "host RSS" and summary["mean_from_step"] == 2 and len(summary["history"]) == 3
    out = capsys.readouterr().out
    assert "throughput (1 process(es); peak memory: host RSS):" in out and "samples/s" in out and "mean 2+" in out


def test_sync_batchnorm_where_a_method_has_batchnorm_on_several_accelerators(tmp_path):
    from osf.models.registry import METHODS
    from osf.models.training import _sync_batchnorm, build_trainer

    def decide(method: str, **run) -> bool:
        cfg = tiny_run_config(method, tmp_path, method_kwargs=dict(METHOD_TEST_CONFIGS[method]), **run)
        return _sync_batchnorm(cfg, METHODS[method](cfg.method))

    assert decide("simclr", accelerator="gpu", num_devices=2)
    assert decide("simclr", accelerator="gpu", num_devices=1, num_nodes=2)
    assert not decide("simclr", accelerator="gpu", num_devices=1)
    assert not decide("simclr", accelerator="cpu", num_devices=2)  # torch syncs BatchNorm on accelerators only
    assert not decide("dino", accelerator="gpu", num_devices=2)  # no BatchNorm
    cfg = tiny_run_config("simclr", tmp_path, num_devices=2, method_kwargs=dict(METHOD_TEST_CONFIGS["simclr"]))
    assert build_trainer(cfg, tmp_path / "r", has_val=False, sync_batchnorm=True).strategy._layer_sync is not None


# --- 3. the sbatch under a stand-in srun ---------------------------------------------------------------
STAND_IN_SRUN = r"""#!/usr/bin/env bash
# Stand-in srun: records its arguments, starts SLURM_NTASKS tasks of the command with their SLURM ids,
# writes their pids, and (with --kill-on-bad-exit=1) kills the others when one fails.
echo "srun $*" >> "$SRUN_LOG"
kill_on_bad=0
while [ "${1#-}" != "$1" ]; do [ "$1" = --kill-on-bad-exit=1 ] && kill_on_bad=1; shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" &
  pids+=($!)
done
echo "${pids[*]}" > "$SRUN_PIDS"
status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then status=1; [ "$kill_on_bad" = 1 ] && kill "${pids[@]}" 2>/dev/null; fi
done
exit $status
"""


def _slurm_env(tmp_path: Path, bin_dir: Path, restart: int) -> dict:
    return {**ENV, "PATH": f"{bin_dir}{os.pathsep}{ENV['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "osf-pretrain",
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1",
            "SLURM_NODELIST": "localhost", "SLURM_SUBMIT_DIR": str(tmp_path / "submit"), "SLURM_RESTART_COUNT": str(restart),
            "MASTER_PORT": str(free_port()), "SRUN_LOG": str(tmp_path / "srun.log"), "SRUN_PIDS": str(tmp_path / "pids"),
            "DATA_DIR": os.environ.get("_OSF_TEST_STORE", ""), "RUN_NAME": "slurm_test"}


@pytest.mark.slow
def test_sbatch_resumes_after_a_preemption_at_the_step_it_stopped(tiny_store, tmp_path):
    """pretrain_slurm.sbatch under a stand-in srun (2 tasks): killed after its step-5 checkpoint, then started again
    as a requeue does: it resumes from the newest checkpoint at its step, finishes, and leaves no -v1 file."""
    bin_dir, submit = tmp_path / "bin", tmp_path / "submit"
    bin_dir.mkdir()
    submit.mkdir()
    (submit / "main_pipelines").symlink_to(REPO / "main_pipelines")
    (bin_dir / "srun").write_text(STAND_IN_SRUN)
    (bin_dir / "srun").chmod(0o755)
    flags = ["--accelerator", "cpu", "--precision", "32", "--num_workers", "0", "--max_steps", "20",
             "--ckpt_every_n_steps", "5", "--logger", "csv", *TINY[:2], *TINY[2:4], *TINY[8:]]
    cmd = ["bash", str(REPO / "bash_scripts" / "pretrain_slurm.sbatch"), *flags]
    env = {**_slurm_env(tmp_path, bin_dir, 0), "DATA_DIR": str(tiny_store)}
    run_dir = submit / "runs" / "slurm_test"

    proc = subprocess.Popen(cmd, cwd=submit, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step00000005.ckpt").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_tree(proc.pid)
            pytest.fail(f"no step-5 checkpoint within 240 s: {proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    kill_tree(proc.pid)  # preempted: the job dies as it is, mid-step
    proc.communicate()
    stopped = find_resume_checkpoint(run_dir)
    step = torch.load(stopped, weights_only=True)["global_step"]
    assert 5 <= step < 20

    again = run_group(cmd, timeout=300, env={**_slurm_env(tmp_path, bin_dir, 1), "DATA_DIR": str(tiny_store)}, cwd=submit)
    assert again.returncode == 0, again.stdout[-4000:]
    assert f"resuming from {stopped.relative_to(submit)} at step {step}" in again.stdout  # the sbatch's --output_dir runs
    assert "restart 1, 1 node(s) x 2 task(s), run slurm_test" in again.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert not [n for n in names if "-v" in n or n.startswith(".")], names
    assert len(list((run_dir).glob("csv_logs/version_*"))) == 2
    assert _csv(run_dir)["step"].min() >= step  # the requeued attempt continues, it does not start over
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert record["lr"] == pytest.approx(5e-5 * 8 / 2048) and record["base_lr"] == pytest.approx(5e-5)  # the lr rule
    srun_calls = (tmp_path / "srun.log").read_text().splitlines()
    assert len(srun_calls) == 2 and all(c.startswith("srun --kill-on-bad-exit=1 python main_pipelines/main_pretrain.py")
                                        for c in srun_calls)
