"""Data-parallel training across processes, launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m structvae train --batch-size 200 ...

:func:`setup` reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and joins the process
group (``gloo`` on the CPU, ``nccl`` on CUDA, where process ``LOCAL_RANK`` takes
``cuda:LOCAL_RANK``). Without them (or with ``WORLD_SIZE=1``) everything here is a no-op and
training is the ordinary single-process loop, bit for bit.

How a step is split (``--batch-size`` is the **global** batch, whatever the number of processes):

- every process builds the same seeded, shuffled loader over the whole training set and reads
  the same global batch; :meth:`DistContext.shard` keeps this process's contiguous slice
  (``torch.tensor_split``: sizes differ by at most one). The sample order is therefore a
  function of ``(seed, epoch)`` only, the same as a single-process run's, which is what the
  DistributedSampler would give without its padding. A final global batch with fewer samples
  than processes is skipped by every process (at most ``world_size - 1`` samples an epoch).
- gradients are not synchronised by ``DistributedDataParallel``: the models are trained
  through ``model.objective``, not ``forward``, and DDP averages gradients with equal weights,
  which is wrong for unequal slices. Instead, after ``backward`` each process scales its
  gradient (of its slice's mean loss) by ``slice / global batch`` and one ``all_reduce`` sums
  them into one flat buffer: the exact gradient of the global batch mean, identical on every
  process, so the Adam steps (and parameters) stay identical without further communication.
  The same buffer carries a "non-finite" flag so that every process skips (or stops on) the
  same batch.
- the Gumbel noise of process ``r`` in epoch ``e`` comes from ``torch.manual_seed(f(seed, e,
  r))``, so a run is reproducible for a given number of processes; with more than one process
  the noise differs from a single-process run's (each slice gets its own stream), so runs agree
  in distribution, and estimators without noise in the gradient agree numerically.
- epoch metrics are sums over the slices, reduced with one ``all_reduce``; only rank 0
  evaluates, writes the run folder (config, metrics, images) and checkpoints. The checkpoint
  holds nothing that depends on the number of processes, so ``--resume`` works with another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "setup", "shutdown", "SINGLE"]

_METRIC_KEYS = ("loss", "recon", "kl")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that evaluates and writes the run folder (rank 0)."""
        return self.rank == 0

    # ---------------------------------------------------------------- data
    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This process's contiguous slice of the global batch ``x [B, ...]``, ``y [B]``;
        ``None`` (on every process) when ``B < world_size``."""
        if not self.enabled:
            return x, y
        if x.shape[0] < self.world_size:
            return None
        return (
            torch.tensor_split(x, self.world_size)[self.rank],
            torch.tensor_split(y, self.world_size)[self.rank],
        )

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Per-process noise: seed torch's RNG from ``(seed, epoch, rank)`` (no-op alone)."""
        if self.enabled:
            torch.manual_seed((int(seed) * 1_000_033 + int(epoch) * 104_729 + self.rank) % 2**63)

    # ----------------------------------------------------------- gradients
    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Make every process start from rank 0's parameters."""
        if not self.enabled:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def reduce_gradients(
        self, params: Sequence[torch.nn.Parameter], local: int, total: int, bad: bool
    ) -> bool:
        """Sum ``grad * local / total`` over the processes (one ``all_reduce``) and return
        whether any process flagged its batch as ``bad`` (then the gradients are undefined)."""
        if not self.enabled:
            return bad
        import torch.distributed as dist

        ref = params[0]
        parts = [
            (p.grad if p.grad is not None and not bad else torch.zeros_like(p)).reshape(-1)
            for p in params
        ]
        flat = torch.cat([*parts, ref.new_full((1,), float(bad))])
        flat[:-1] *= local / total
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            size = p.numel()
            p.grad = flat[offset : offset + size].view_as(p).clone()
            offset += size
        return bool(flat[-1] > 0)

    # -------------------------------------------------------------- metrics
    def reduce_sums(self, sums: dict, count: int) -> tuple[dict, int]:
        """Add up the epoch's metric sums (per key) and sample counts of all processes."""
        if not self.enabled:
            return sums, count
        import torch.distributed as dist

        keys = sorted(set(sums) | set(_METRIC_KEYS))  # the same on every process
        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else None
        vec = torch.tensor(
            [float(sums.get(k, 0.0)) for k in keys] + [float(count)],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(vec)
        vals = vec.tolist()
        out = {k: torch.tensor(v, dtype=torch.float64) for k, v in zip(keys, vals, strict=False)}
        return out, int(round(vals[-1]))


SINGLE = DistContext()
"""The context of an ordinary single-process run."""


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE > 1``; returns the context and the
    device this process uses (``cuda`` becomes ``cuda:LOCAL_RANK``).

    ``gloo`` on the CPU, ``nccl`` on CUDA. Raises ``ValueError`` for a CUDA run with more
    processes on a node than visible devices.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no CUDA device ({torch.cuda.device_count()} visible); "
                "use --nproc_per_node <= the number of GPUs per node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
    return ctx, device


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
