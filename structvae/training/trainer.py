"""The training loop: :class:`Trainer` and :func:`train`.

A :class:`Trainer` is built from a :class:`~structvae.training.TrainConfig`: its constructor
checks the configuration and builds the model, the estimator and the solver once
(:func:`~structvae.training.build.check_config`), without touching the disk; :meth:`Trainer.fit`
loads the data, starts or resumes the run folder, trains and evaluates.

``max_steps`` and ``max_time_s`` are the budget of one invocation: the loop stops at a step
boundary once this call has taken ``max_steps`` steps or spent ``max_time_s`` training seconds,
writes a mid-epoch ``last.pt`` (the epoch, the position in it, the epoch's running sums, every
RNG state) and ``resume`` continues exactly where it stopped. The cut epoch is still validated
for this call's results (a row with ``"partial": true``; ``best.pt`` when it is the best so
far), but not recorded in the run's history: resuming rewrites the metric files and restores
``best.pt`` to what the uninterrupted run would hold.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..guard import _Terminated, sigterm_as_interrupt, train_step
from .artefacts import _RECON_IMAGES, _fixed_images, _plot_curves, _save_images
from .build import _device, _labelled_subset, _load_data, check_config, resume_mismatch
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluation import _evaluate_model
from .rng import _epoch_seed, _rng_state, _set_rng_state
from .rundir import (
    METRIC_FIELDS,
    _append_metrics,
    _resolve_out,
    _write_json,
    _write_metrics,
    claim_run_folder,
)

__all__ = ["Trainer", "train"]


@dataclass
class EpochSums:
    """The running sums of the epoch in progress (saved in a mid-epoch checkpoint).

    ``sums`` holds ``Σ_b value·b`` per statistic as float64 0-dim tensors, ``count`` the rows
    they cover, ``skipped`` the batches dropped as non-finite, ``info`` the last float
    statistics (``eps``, ``temperature``).
    """

    sums: dict = field(default_factory=dict)
    count: int = 0
    skipped: int = 0
    info: dict = field(default_factory=dict)

    def add(self, stats: dict, rows: int) -> None:
        """Add one step's statistics (tensors are batch means over ``rows`` rows)."""
        self.count += rows
        for k, v in stats.items():
            if isinstance(v, torch.Tensor):
                self.sums[k] = self.sums.get(k, 0.0) + v.detach().double() * rows
            else:
                self.info[k] = float(v)

    def state(self) -> dict:
        sums = {k: torch.as_tensor(v).detach().cpu() for k, v in self.sums.items()}
        return {"sums": sums, "count": self.count, "skipped": self.skipped, "info": self.info}

    @classmethod
    def from_state(cls, state: dict | None, device: torch.device) -> EpochSums:
        if not state:
            return cls()
        sums = {k: v.to(device) for k, v in state["sums"].items()}
        return cls(sums, int(state["count"]), int(state["skipped"]), dict(state["info"]))


@dataclass
class Progress:
    """Where the run stands: what ``last.pt`` restores.

    ``epoch`` counts finished epochs; ``position`` the batches of the next epoch already
    trained on (non-zero only in a mid-epoch checkpoint, with their ``sums``).
    """

    epoch: int = 0
    position: int = 0
    iteration: int = 0
    elapsed: float = 0.0
    best_val: float = math.inf
    best_epoch: int | None = None
    history: list = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)


class Trainer:
    """One run of ``config``: ``Trainer(config).fit()`` is :func:`train`.

    The constructor validates ``config`` and builds the model, estimator and solver (a
    ``ValueError`` with a one-line message for a bad configuration; nothing is written).
    """

    def __init__(self, config: TrainConfig) -> None:
        self.parts = check_config(config)  # fails fast, before any data is read
        self.config = dataclasses.replace(self.parts.config)  # the specs resolved
        self.model = self.parts.model
        self.estimator = self.parts.estimator
        self.device = _device(self.config.device)
        self.progress = Progress()
        self.partial_row: dict | None = None  # the cut epoch of a budget stop
        self.stopped_by: str | None = None
        self._pending_rng: dict | None = None
        self._steps = 0  # steps taken by this call (the max_steps budget)
        self._elapsed0 = 0.0  # progress.elapsed when this call started (the max_time_s budget)
        self.lock = None  # the run folder's lock, held by rank 0 while fit() runs
        self._sigterm = None  # sigterm_as_interrupt's undo (its .received) while fit() runs

    # ------------------------------------------------------------------ setting up
    def fit(self) -> dict:
        """Train, then evaluate ``best.pt`` on the test split; returns the results (also in
        ``results.json``) with ``run_dir`` added."""
        try:
            return self._fit()
        finally:  # the run folder's lock (rank 0), however the call ends
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> dict:
        self._setup()
        self._start()
        restore_sigterm = sigterm_as_interrupt()  # kill (SIGTERM) takes the Ctrl-C path below
        self._sigterm = restore_sigterm
        try:
            for epoch in range(self.progress.epoch, self.config.epochs):
                if not self._run_epoch(epoch):
                    break
        except KeyboardInterrupt:
            self.log(
                f"interrupted; continue with --resume --out {self.out} (from the last checkpoint)"
            )
            raise
        finally:
            restore_sigterm()
        if not self.ctx.is_main:
            return {
                "run_dir": str(self.out),
                "rank": self.ctx.rank,
                "iterations": self.progress.iteration,
            }
        return self._finish()

    def _setup(self) -> None:
        """Run folder, process group, data, device placement, optimizer, solver pool."""
        config = self.config
        self.out = _resolve_out(config)
        config.out = str(self.out)
        self.ctx, self.device = distributed.setup(self.device)  # torchrun: rank 0 writes
        config.quiet = config.quiet or not self.ctx.is_main
        if self.ctx.enabled and config.max_time_s is not None:
            raise ValueError(
                "--max-time is not supported under torchrun: each process measures its own time "
                "and they would stop at different steps; use --max-steps or --epochs"
            )
        self.log = (lambda msg: None) if config.quiet else tqdm.write
        self.splits = _load_data(config)
        self.labelled = _labelled_subset(config, self.splits)  # checked before writing
        self.image_shape = tuple(self.splits.image_shape)
        if math.prod(self.image_shape) != self.parts.input_dim:
            raise ValueError(
                f"dataset {config.dataset!r} holds images of shape {list(self.image_shape)}, "
                f"not the {self.parts.input_dim} pixels its model was built for"
            )
        self._place()
        gen = getattr(self.splits.train, "generator", None)  # dynamic binarisation
        self.train_gen = gen if isinstance(gen, torch.Generator) else None
        self.fixed_x = _fixed_images(self.splits.val, _RECON_IMAGES, config.seed).to(self.device)

    def _place(self) -> None:
        """Model and estimator on the device, the optimizer over both, the solver pool."""
        model, estimator = self.model.to(self.device), self.estimator
        params = list(model.parameters())
        if isinstance(estimator, nn.Module):
            estimator.to(self.device)
            params += [p for p in estimator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)
        self.ctx.broadcast_parameters(params)
        named = [(f"model.{k}", p) for k, p in model.named_parameters()]
        named += [(f"estimator.param{i}", p) for i, p in enumerate(params[len(named) :])]
        self.named = named

    def _start(self) -> None:
        """Resume from ``last.pt``, or clear the run folder's artefacts for a fresh run."""
        out, ctx, config = self.out, self.ctx, self.config
        if ctx.is_main:  # one writer per folder; a fresh run clears the old run's artefacts
            self.lock = claim_run_folder(out, resume=config.resume, overwrite=config.overwrite)
        if self.config.resume:
            self._resume(load_checkpoint(out / "last.pt"))
        elif ctx.is_main:
            _write_metrics(out, [])
        if ctx.is_main:  # with the solver the run uses (its request is config.solver)
            record = {**self.config.to_dict(), "solver_used": self.parts.solver.name}
            _write_json(out / "config.json", record)
            self._write_labelled()
        self._elapsed0 = self.progress.elapsed
        self.log(
            f"training {self.config.model} {self.config.latent} with {self.config.estimator} on "
            f"{self.config.dataset} ({len(self.splits.train)} train / {len(self.splits.val)} val"
            f" / {len(self.splits.test)} test), solver {self.parts.solver.name}, on "
            f"{self.device}; run folder {out}"
        )

    def _write_labelled(self) -> None:
        """``labelled_indices.json``: the labelled rows, of the training split and the source."""
        if self.labelled is None:
            return
        src = getattr(self.splits.train, "source_index", None)
        record = {"train_index": self.labelled.tolist()}
        if src is not None:
            record["source_index"] = src[self.labelled].tolist()
        _write_json(self.out / "labelled_indices.json", record)

    def _resume(self, ckpt: dict) -> None:
        """Restore the model, optimizer, estimator, counters and RNG states from ``ckpt``."""
        out = self.out
        clash = resume_mismatch(TrainConfig.from_dict(ckpt.get("config", {})), self.config)
        if clash is not None:
            name, was, now = clash
            raise ValueError(
                f"cannot resume {out}: {name} was {was!r} in that run, now {now!r}; "
                "use the same settings (epochs, max_steps and device may change)"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("estimator") is not None:
                self.estimator.load_state_dict(ckpt["estimator"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {out / 'last.pt'} does not fit this model: {e}"
            ) from e
        p = self.progress
        p.epoch, p.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        p.position = int(ckpt.get("position", 0))
        p.elapsed, p.best_val = float(ckpt["time_s"]), float(ckpt["best_val"])
        p.best_epoch, p.history = ckpt.get("best_epoch"), list(ckpt["history"])
        p.sums = EpochSums.from_state(ckpt.get("epoch_sums"), self.device)
        self.estimator.set_step(int(ckpt.get("estimator_iteration", p.iteration)))
        if p.position:  # mid-epoch: the RNG state after the epoch's first `position` batches
            ranks = ckpt.get("rng_ranks") or []
            same_world = len(ranks) == self.ctx.world_size
            self._pending_rng = ranks[self.ctx.rank] if same_world else ckpt["rng"]
        else:
            _set_rng_state(ckpt["rng"], self.device, self.train_gen)
        if self.ctx.is_main:
            _write_metrics(out, p.history)  # drops the row of a cut epoch
            if "best_restore" in ckpt:  # best.pt as the uninterrupted run has it
                self._restore_best(ckpt["best_restore"])
        where = f"epoch {p.epoch + 1}" + (f" after {p.position} batches" if p.position else "")
        self.log(f"resuming {out} at {where} (iteration {p.iteration})")

    def _restore_best(self, best: dict | None) -> None:
        if best is None:
            (self.out / "best.pt").unlink(missing_ok=True)
        else:
            save_checkpoint(best, self.out / "best.pt")

    # ------------------------------------------------------------------ the loop
    def _loader(self, epoch: int):
        """The batches of ``epoch`` (0-based): their order is a function of ``(seed, epoch)``."""
        from ..data import make_loader

        config, seed = self.config, _epoch_seed(self.config.seed, epoch)
        if self.labelled is not None:  # semi-supervised: unlabelled + labelled batch per step
            from ..data.semisup import MixedBatches

            return MixedBatches(
                self.splits.train,
                self.labelled,
                config.batch_size,
                seed=seed,
                labelled_batch_size=config.labelled_batch_size,
            )
        return make_loader(
            self.splits.train, config.batch_size, shuffle=True, seed=seed, drop_last=False
        )

    def _run_epoch(self, epoch: int) -> bool:
        """Train ``epoch`` from ``progress.position``; False when the run stops here."""
        config, p = self.config, self.progress
        self.model.train()
        loader = self._loader(epoch)
        total = len(loader)
        self.ctx.seed_epoch(config.seed, epoch)
        batches = iter(loader)
        for _ in range(p.position):  # a mid-epoch resume: the batches already trained on
            next(batches)
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng, self.device, self.train_gen)
            self._pending_rng = None
        bar = tqdm(
            total=total,
            initial=p.position,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=True if config.quiet else None,
            leave=False,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        try:
            while p.position < total:
                if self._budget_spent(t0):
                    p.elapsed += time.perf_counter() - t0
                    self._stop_mid_epoch(epoch)
                    return False
                x, y = next(batches)
                p.position += 1
                self._step(x, y)
                if self._sigterm is not None and self._sigterm.received:
                    raise _Terminated(self._sigterm.received)  # one swallowed by a __del__
                bar.update(1)
                if p.iteration % config.log_every == 0 and not bar.disable and p.sums.count:
                    bar.set_postfix(loss=f"{float(p.sums.sums['loss']) / p.sums.count:.2f}")
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        p.elapsed += time.perf_counter() - t0
        return self._end_epoch(epoch)

    def _budget_spent(self, t0: float) -> bool:
        """Whether this call's ``max_steps`` / ``max_time_s`` is used up (at least one step)."""
        config = self.config
        if not self._steps:
            return False
        if config.max_steps is not None and self._steps >= config.max_steps:
            self.stopped_by = "max_steps"
        elif config.max_time_s is not None:
            spent = self.progress.elapsed + time.perf_counter() - t0 - self._elapsed0
            if spent >= config.max_time_s:
                self.stopped_by = "max_time_s"
        return self.stopped_by is not None

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimisation step on the global batch ``x [B, ...]``, ``y [B]``."""
        p, ctx = self.progress, self.ctx
        global_batch = x.shape[0]
        part = ctx.shard(x, y)  # this process's slice (the whole batch alone)
        if part is None:
            return
        x, y = part
        x = x.to(self.device, non_blocking=True)
        self.estimator.set_step(p.iteration)
        kw = {"y": y.to(self.device)} if self.model.uses_labels else {}
        stats = train_step(
            self.model,
            self.estimator,
            self.optimizer,
            self.named,
            x,
            step=p.iteration + 1,
            skip_nonfinite=self.config.skip_nonfinite,
            ctx=ctx,
            global_batch=global_batch,
            **kw,
        )
        p.iteration += 1
        self._steps += 1
        if stats is None:
            p.sums.skipped += 1
        else:
            p.sums.add(stats, x.shape[0])

    def _epoch_means(self, epoch: int, finished: bool = True) -> dict | None:
        """The epoch's mean statistics over every process (None: no row was trained on)."""
        sums = self.progress.sums
        totals, count = self.ctx.reduce_sums(sums.sums, sums.count)
        if count == 0:
            if sums.skipped and finished:
                raise FloatingPointError(
                    f"every batch of epoch {epoch + 1} had NaN or inf (skipped {sums.skipped})"
                )
            return None
        means = {k: float(v) / count for k, v in totals.items()}
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(
                f"training loss became {means['loss']} in epoch {epoch + 1} "
                f"(iteration {self.progress.iteration}); lower --lr or check the estimator"
            )
        return means

    def _validate(self, epoch: int, means: dict) -> dict:
        """The metrics row of ``epoch`` (0-based): its training means and the validation."""
        p, sums = self.progress, self.progress.sums
        val = _evaluate_model(self.model, self.splits.val, self.device, self.config.seed)
        row = {
            "epoch": epoch + 1,
            "iteration": p.iteration,
            "train_loss": means["loss"],
            "train_recon": means.get("recon"),
            "train_kl": means.get("kl"),
            "val_loss": val["loss"],
            "val_recon": val["recon"],
            "val_kl": val["kl"],
            "time_s": p.elapsed,
            "eps": sums.info.get("eps"),
            "temperature": sums.info.get("temperature"),
            "skipped": sums.skipped,
        }
        row.update({f"val_{k}": v for k, v in val["labels"].items()})
        return row

    def _end_epoch(self, epoch: int) -> bool:
        """Validate, checkpoint and draw the finished ``epoch``; False when nothing trained."""
        p = self.progress
        means = self._epoch_means(epoch)
        if means is None:
            return False
        row = self._validate(epoch, means) if self.ctx.is_main else None
        p.epoch, p.position, p.sums = epoch + 1, 0, EpochSums()
        if row is None:
            return True  # rank 0 evaluates, checkpoints and writes the run folder
        p.history.append(row)
        improved = row["val_loss"] < p.best_val
        if improved:
            p.best_val, p.best_epoch = row["val_loss"], epoch + 1
            save_checkpoint(self._best_state(row), self.out / "best.pt")
        save_checkpoint(self._last_state(), self.out / "last.pt")
        if set(row) <= set(METRIC_FIELDS):
            _append_metrics(self.out, row)
        else:  # extra columns (val_accuracy …): rewrite so the CSV header has them
            _write_metrics(self.out, p.history)
        self._draw(p.history, "")
        self._log_row(row, means, improved)
        return True

    def _stop_mid_epoch(self, epoch: int) -> None:
        """The budget is spent inside ``epoch``: a mid-epoch ``last.pt``, and the cut epoch
        validated for this call's results (``best.pt`` too when it is the best so far)."""
        p, out = self.progress, self.out
        means = self._epoch_means(epoch, finished=False)
        rank_rng = self._gather_rng()  # under torchrun: every process's noise stream
        if not self.ctx.is_main:
            return
        state = {**self._last_state(), "rng_ranks": rank_rng}
        row = None if means is None else {**self._validate(epoch, means), "partial": True}
        improved = row is not None and row["val_loss"] < p.best_val
        if improved:  # resuming puts back the best.pt of the finished epochs
            best = out / "best.pt"
            state["best_restore"] = load_checkpoint(best) if best.is_file() else None
        save_checkpoint(state, out / "last.pt")
        if row is not None:
            if improved:
                save_checkpoint({**self._best_state(row), "partial": True}, out / "best.pt")
            self.partial_row = row
            _write_metrics(out, [*p.history, row])
            self._draw([*p.history, row], "")
            self._log_row(row, means, improved)
        budget = self.config.max_steps if self.stopped_by == "max_steps" else self.config.max_time_s
        flag = "--max-steps" if self.stopped_by == "max_steps" else "--max-time"
        self.log(
            f"{flag} {budget} spent in epoch {epoch + 1} after {p.position} batches "
            f"(iteration {p.iteration}); continue with --resume --out {out}"
        )

    def _gather_rng(self) -> list | None:
        """Under torchrun, every process's RNG state (a collective: all processes call it)."""
        if not self.ctx.enabled:
            return None
        import torch.distributed as dist

        states: list = [None] * self.ctx.world_size
        dist.all_gather_object(states, _rng_state(self.device, self.train_gen))
        return states

    # ------------------------------------------------------------------ state and output
    def _best_state(self, row: dict) -> dict:
        return {
            "model": self.model.state_dict(),
            "epoch": row["epoch"],
            "iteration": row["iteration"],
            "val_loss": row["val_loss"],
            "config": self.config.to_dict(),
        }

    def _last_state(self) -> dict:
        """Everything :meth:`_resume` needs (``position`` > 0: a mid-epoch checkpoint)."""
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "epoch": p.epoch,
            "position": p.position,
            "epoch_sums": p.sums.state() if p.position else None,
            "iteration": p.iteration,
            "val_loss": p.history[-1]["val_loss"] if p.history else None,
            "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "estimator": self.estimator.state_dict(),
            "estimator_iteration": p.iteration,
            "time_s": p.elapsed,
            "best_val": p.best_val,
            "best_epoch": p.best_epoch,
            "history": p.history,
            "rng": _rng_state(self.device, self.train_gen),
        }

    def _draw(self, rows: list[dict], prefix: str) -> None:
        """The loss curves (``rows``) and the image grids of the current model."""
        config, out = self.config, self.out
        if rows:
            _plot_curves(out, rows)
        _save_images(
            self.model, self.fixed_x, self.image_shape, out, prefix, config.seed, self.device
        )

    def _log_row(self, row: dict, means: dict, improved: bool) -> None:
        extra = "".join(f" {k}={row[k]:.3g}" for k in ("eps", "temperature") if row[k] is not None)
        extra += "".join(
            f" {k}={v:.4f}" for k, v in row.items() if k not in METRIC_FIELDS and k != "partial"
        )
        cut = " (cut short)" if row.get("partial") else ""
        self.log(
            f"epoch {row['epoch']}/{self.config.epochs}{cut} it {row['iteration']}: "
            f"train {means['loss']:.2f} (recon {means.get('recon', math.nan):.2f} "
            f"kl {means.get('kl', math.nan):.2f}) val {row['val_loss']:.2f}"
            f"{' *' if improved else ''}{extra} [{row['time_s']:.1f}s]"
        )

    # ------------------------------------------------------------------ the end
    def _finish(self) -> dict:
        """Evaluate ``best.pt`` on the test split; write and return the results."""
        config, out, p = self.config, self.out, self.progress
        if not (out / "best.pt").exists():
            raise CheckpointError(f"no epoch finished, so {out / 'best.pt'} was never written")
        best = load_checkpoint(out / "best.pt")
        self.model.load_state_dict(best["model"])
        test = _evaluate_model(
            self.model, self.splits.test, self.device, config.seed, iwae_samples=config.eval_samples
        )
        self._draw([], "best_")
        rows = [*p.history, *([self.partial_row] if self.partial_row else [])]
        results = {
            "test_loss": test["loss"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "test_iwae_nll": test.get("iwae_nll"),  # None: skipped (eval_samples 0) or intractable
            "iwae_samples": config.eval_samples,
            # what test_loss is: the KL it adds, and whether it estimates a bound on -log p(x)
            "kl_kind": self.model.kl_kind,
            "test_loss_is_bound": self.model.loss_is_bound,
            "best_epoch": best.get("epoch"),
            "best_val_loss": best.get("val_loss"),
            "epochs": rows[-1]["epoch"] if rows else 0,
            "iterations": p.iteration,
            "time_s": p.elapsed,
            "stopped_by": self.stopped_by,
            "dataset": config.dataset,
            "model": config.model,
            "latent": config.latent,
            "estimator": config.estimator,
            "solver": self.parts.solver.name,
            "seed": config.seed,
        }
        results.update({f"test_{k}": v for k, v in test["labels"].items()})
        if config.labels is not None:
            results["labels"] = config.labels
        _write_json(out / "results.json", results)
        self._log_results(results)
        return {**results, "run_dir": str(out)}

    def _log_results(self, results: dict) -> None:
        iwae = results["test_iwae_nll"]
        iwae_text = "n/a (intractable)" if iwae is None else f"{iwae:.2f}"
        iwae_text = iwae_text if results["iwae_samples"] else "skipped (--eval-samples 0)"
        bound = "" if results["test_loss_is_bound"] is not False else " (not a bound)"
        kind = f", KL {results['kl_kind']}" if results["kl_kind"] else ""
        self.log(
            f"best epoch {results['best_epoch']}: test loss {results['test_loss']:.2f}{bound}"
            f"{kind}, IWAE NLL ({results['iwae_samples']} samples) {iwae_text}; "
            f"results in {self.out}"
        )


def train(config: TrainConfig) -> dict:
    """Train ``config.model`` with ``config.estimator``; returns the final results (also in
    ``results.json``) with ``run_dir`` added. See :mod:`structvae.training` for the run folder."""
    return Trainer(config).fit()
