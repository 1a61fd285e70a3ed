"""Data-parallel training: sharding, and 2 CPU processes (torchrun, gloo) against one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structvae.distributed import SINGLE, DistContext, setup
from structvae.train import TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world, B", [(2, 10), (3, 10), (4, 7), (3, 3)])
def test_shards_cover_the_global_batch_in_order(world, B):
    x = torch.arange(B * 2).reshape(B, 2)
    y = torch.arange(B)
    parts = [DistContext(rank=r, world_size=world).shard(x, y) for r in range(world)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    sizes = [p[0].shape[0] for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_a_batch_smaller_than_the_world_is_skipped_everywhere():
    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert all(DistContext(rank=r, world_size=3).shard(x, y) is None for r in range(3))


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = setup(torch.device("cpu"))
    assert ctx is SINGLE and not ctx.enabled and ctx.is_main and device == torch.device("cpu")
    x, y = torch.zeros(5, 2), torch.zeros(5)
    assert SINGLE.shard(x, y)[0] is x
    state = torch.get_rng_state()
    SINGLE.seed_epoch(0, 3)  # must not touch the RNG of a single-process run
    assert torch.equal(state, torch.get_rng_state())
    sums = {"loss": torch.tensor(3.0)}
    assert SINGLE.reduce_sums(sums, 4) == (sums, 4)


_WORKER = """
import json, torch
from structvae.distributed import setup, shutdown
ctx, device = setup(torch.device("cpu"))
torch.manual_seed(0)
x, y = torch.randn(5, 3), torch.randn(5)
model = torch.nn.Linear(3, 1)
full = torch.nn.Linear(3, 1)
full.load_state_dict(model.state_dict())
((full(x).squeeze(-1) - y) ** 2).mean().backward()  # the gradient of the whole batch
xs, ys = ctx.shard(x, y)  # 3 rows on rank 0, 2 on rank 1
((model(xs).squeeze(-1) - ys) ** 2).mean().backward()
params = list(model.parameters())
bad = ctx.reduce_gradients(params, xs.shape[0], 5, False)
same = all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(params, full.parameters()))
flag = ctx.reduce_gradients(params, xs.shape[0], 5, ctx.rank == 1)  # rank 1 saw a NaN
sums, count = ctx.reduce_sums({"loss": torch.tensor(float(ctx.rank + 1))}, xs.shape[0])
print(json.dumps({"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend,
                  "rows": xs.shape[0], "bad": bad, "same": same, "flag": flag,
                  "loss": float(sums["loss"]), "count": count}))
shutdown()
"""


def test_two_gloo_processes_reduce_weighted_gradients_and_flags():
    """Unequal slices (3 + 2 rows): the reduced gradient is the whole batch's, on both ranks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        env.update(WORLD_SIZE="2", LOCAL_RANK=str(rank))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER], env=env, stdout=subprocess.PIPE, text=True
            )
        )
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o["rows"] for o in outs] == [3, 2]
    for o in outs:
        assert o["world"] == 2 and o["backend"] == "gloo"
        assert o["same"] and not o["bad"] and o["flag"]  # every rank sees rank 1's flag
        assert o["loss"] == 3.0 and o["count"] == 5


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


# The exact estimator's gradient has no noise, so a 2-process run and a 1-process run with the
# same global batch must agree up to float round-off (the logged train recon is at a sampled z,
# whose noise differs per process, so it is not compared).
COMMON = dict(estimator="exact", latent="1x4", batch_size=400, eval_samples=2, quiet=True)


@pytest.mark.slow  # two torch processes start (~20-40 s on two busy cores)
def test_two_processes_match_one_and_resume_with_one(tmp_path):
    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "structvae",
        "train",
        "--estimator",
        "exact",
        "--latent",
        "1x4",
        "--batch-size",
        "400",
        "--epochs",
        "2",
        "--eval-samples",
        "2",
        "--quiet",
        "--out",
        str(two),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(two.glob(".*tmp*"))  # one writer, no stray temporaries

    one = train(TrainConfig(out=str(tmp_path / "one"), epochs=3, **COMMON))
    a, b = _rows(tmp_path / "one")[:2], _rows(two)
    assert [r["iteration"] for r in b] == [10, 20]  # 4000 images / global batch 400
    for ra, rb in zip(a, b, strict=True):
        for key in ("val_loss", "val_recon", "val_kl", "train_kl"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-2)  # sampled z

    # resume the 2-process run with a single process: epoch 3 continues from the checkpoint
    resumed = train(TrainConfig(out=str(two), epochs=3, resume=True, **COMMON))
    rows = _rows(two)
    assert len(rows) == 3 and rows[2]["iteration"] == 30
    assert rows[2]["val_loss"] == pytest.approx(_rows(tmp_path / "one")[2]["val_loss"], rel=1e-4)
    assert resumed["test_loss"] == pytest.approx(one["test_loss"], rel=1e-3)
    pa = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    pb = load_checkpoint(two / "last.pt")["model"]
    for k in pa:  # Adam moves near-zero-gradient weights by up to lr per step either way
        assert torch.allclose(pa[k], pb[k], atol=3e-3), k
