"""The training loop: :func:`train`."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..guard import sigterm_as_interrupt, train_step
from ..models import build_model
from ..models.reference import set_objective
from ..solvers.pool import attach_pool
from .artefacts import (
    _RECON_IMAGES,
    _fixed_images,
    _plot_curves,
    _save_generation_grid,
    _save_images,
)
from .build import _device, _labelled_subset, _load_data, _model_options, check_config
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import _IDENTITY_FIELDS, TrainConfig
from .evaluation import _evaluate_model
from .rng import _epoch_seed, _rng_state, _seed_everything, _set_rng_state
from .rundir import (
    _ARTIFACTS,
    METRIC_FIELDS,
    _append_metrics,
    _resolve_out,
    _write_json,
    _write_metrics,
)


def _estimator_state(estimator):
    fn = getattr(estimator, "state_dict", None)
    return fn() if callable(fn) else None


def train(config: TrainConfig) -> dict:
    """Train ``config.model`` with ``config.estimator``; returns the final results (also in
    ``results.json``) with ``run_dir`` added. See the module docstring for the run folder."""
    from ..data import make_loader

    config = dataclasses.replace(config)
    model, estimator = check_config(config)  # fails fast, before any data is read
    device = _device(config.device)
    out = _resolve_out(config)
    config.out = str(out)
    ctx, device = distributed.setup(device)  # torchrun: rank 0 evaluates and writes
    config.quiet = config.quiet or not ctx.is_main
    if ctx.enabled and config.max_time_s is not None:
        raise ValueError(
            "--max-time is not supported under torchrun: each process measures its own time and "
            "they would stop at different steps; use --max-steps or --epochs"
        )
    log = (lambda msg: None) if config.quiet else tqdm.write

    # data and model (the model is rebuilt after seeding so that its initialisation is seeded)
    splits = _load_data(config)
    labelled = _labelled_subset(config, splits)  # checked before the run folder is touched
    image_shape = tuple(splits.image_shape)
    input_dim = int(np.prod(image_shape))
    _seed_everything(config.seed)
    model = build_model(
        config.model, latent=config.latent, input_dim=input_dim, **_model_options(config)
    ).to(device)
    set_objective(model, config.objective)
    if hasattr(estimator, "setup"):  # estimators with networks sized by the latents
        estimator.setup(*model.latent_shape)
    if isinstance(estimator, nn.Module):
        estimator.to(device)
    params = list(model.parameters())
    if isinstance(estimator, nn.Module):
        params += [p for p in estimator.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    ctx.broadcast_parameters(params)
    attach_pool(estimator, config.solver_workers)
    named = [(f"model.{k}", p) for k, p in model.named_parameters()]
    named += [(f"estimator.param{i}", p) for i, p in enumerate(params[len(named) :])]
    train_gen = getattr(splits.train, "generator", None)
    if not isinstance(train_gen, torch.Generator):
        train_gen = None

    start_epoch, iteration, elapsed = 0, 0, 0.0
    best_val, best_epoch = math.inf, None
    history: list[dict] = []
    if config.resume:
        ckpt = load_checkpoint(out / "last.pt")
        saved = TrainConfig.from_dict(ckpt.get("config", {}))
        for field in _IDENTITY_FIELDS:
            a, b = getattr(saved, field), getattr(config, field)
            if a != b:
                raise ValueError(
                    f"cannot resume {out}: {field} was {a!r} in that run, now {b!r}; "
                    "use the same settings (epochs, max_steps and device may change)"
                )
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("estimator") is not None:
                estimator.load_state_dict(ckpt["estimator"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {out / 'last.pt'} does not fit this model: {e}"
            ) from e
        start_epoch = int(ckpt["epoch"])
        iteration = int(ckpt["iteration"])
        elapsed = float(ckpt["time_s"])
        best_val = float(ckpt["best_val"])
        best_epoch = ckpt.get("best_epoch")
        history = list(ckpt["history"])
        estimator.iteration = int(ckpt.get("estimator_iteration", iteration))
        _set_rng_state(ckpt["rng"], device, train_gen)
        if ctx.is_main:
            _write_metrics(out, history)
        log(f"resuming {out} at epoch {start_epoch + 1} (iteration {iteration})")
    elif ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for name in _ARTIFACTS:
            (out / name).unlink(missing_ok=True)
        _write_metrics(out, history)
    if ctx.is_main:
        _write_json(out / "config.json", config.to_dict())
    if labelled is not None and ctx.is_main:  # as rows of the training split and of the source file
        src = getattr(splits.train, "source_index", None)
        record = {"train_index": labelled.tolist()}
        if src is not None:
            record["source_index"] = src[labelled].tolist()
        _write_json(out / "labelled_indices.json", record)

    fixed_x = _fixed_images(splits.val, _RECON_IMAGES, config.seed).to(device)
    kw_labels = bool(getattr(model, "uses_labels", False))

    if not config.quiet:
        log(
            f"training {config.model} {config.latent} with {config.estimator} on "
            f"{config.dataset} ({len(splits.train)} train / {len(splits.val)} val / "
            f"{len(splits.test)} test) on {device}; run folder {out}"
        )
    stopped = config.max_steps is not None and iteration >= config.max_steps
    stopped = stopped or (config.max_time_s is not None and elapsed >= config.max_time_s)
    epoch = start_epoch
    restore_sigterm = sigterm_as_interrupt()  # kill (SIGTERM) takes the Ctrl-C path below
    try:
        for epoch in range(start_epoch, config.epochs):
            if stopped:
                break
            model.train()
            loader = make_loader(
                splits.train,
                config.batch_size,
                shuffle=True,
                seed=_epoch_seed(config.seed, epoch),
                drop_last=False,
            )
            ctx.seed_epoch(config.seed, epoch)
            skipped = 0
            if labelled is not None:  # semi-supervised: unlabelled + labelled batch per step
                from ..semisup_data import MixedBatches

                loader = MixedBatches(
                    splits.train,
                    labelled,
                    config.batch_size,
                    seed=_epoch_seed(config.seed, epoch),
                    labelled_batch_size=config.labelled_batch_size,
                )
            sums: dict[str, torch.Tensor | float] = {}
            last_info: dict[str, float] = {}
            count = 0
            t0 = time.perf_counter()
            bar = tqdm(
                loader,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=True if config.quiet else None,
                leave=False,
                dynamic_ncols=True,
            )
            for x, y in bar:
                if config.max_steps is not None and iteration >= config.max_steps:
                    stopped = True
                    break
                if config.max_time_s is not None and count:
                    if elapsed + time.perf_counter() - t0 >= config.max_time_s:
                        stopped = True
                        break
                global_batch = x.shape[0]
                part = ctx.shard(x, y)  # this process's slice (the whole batch alone)
                if part is None:
                    continue
                x, y = part
                x = x.to(device, non_blocking=True)
                estimator.iteration = iteration
                kw = {"y": y.to(device)} if kw_labels else {}
                stats = train_step(
                    model,
                    estimator,
                    optimizer,
                    named,
                    x,
                    step=iteration + 1,
                    skip_nonfinite=config.skip_nonfinite,
                    ctx=ctx,
                    global_batch=global_batch,
                    **kw,
                )
                iteration += 1
                if stats is None:
                    skipped += 1
                    continue
                b = x.shape[0]
                count += b
                for k, v in stats.items():
                    if isinstance(v, torch.Tensor):
                        sums[k] = sums.get(k, 0.0) + v.detach().double() * b
                    else:
                        last_info[k] = float(v)
                if iteration % config.log_every == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{float(sums['loss']) / count:.2f}")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed += time.perf_counter() - t0
            sums, count = ctx.reduce_sums(sums, count)
            if count == 0:
                if skipped:
                    raise FloatingPointError(
                        f"every batch of epoch {epoch + 1} had NaN or inf (skipped {skipped})"
                    )
                break
            means = {k: float(v) / count for k, v in sums.items()}
            if not math.isfinite(means["loss"]):
                raise FloatingPointError(
                    f"training loss became {means['loss']} in epoch {epoch + 1} "
                    f"(iteration {iteration}); lower --lr or check the estimator"
                )
            if not ctx.is_main:
                continue  # rank 0 evaluates, checkpoints and writes the run folder
            val = _evaluate_model(model, splits.val, device, config.seed)
            row = {
                "epoch": epoch + 1,
                "iteration": iteration,
                "train_loss": means["loss"],
                "train_recon": means.get("recon"),
                "train_kl": means.get("kl"),
                "val_loss": val["loss"],
                "val_recon": val["recon"],
                "val_kl": val["kl"],
                "time_s": elapsed,
                "eps": last_info.get("eps"),
                "temperature": last_info.get("temperature"),
                "skipped": skipped,
            }
            row.update({f"val_{k}": v for k, v in val["labels"].items()})
            history.append(row)
            improved = val["loss"] < best_val
            if improved:
                best_val, best_epoch = val["loss"], epoch + 1
            state = {
                "model": model.state_dict(),
                "epoch": epoch + 1,
                "iteration": iteration,
                "val_loss": val["loss"],
                "config": config.to_dict(),
            }
            if improved:
                save_checkpoint(state, out / "best.pt")
            state.update(
                {
                    "optimizer": optimizer.state_dict(),
                    "estimator": _estimator_state(estimator),
                    "estimator_iteration": iteration,
                    "time_s": elapsed,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "history": history,
                    "rng": _rng_state(device, train_gen),
                }
            )
            save_checkpoint(state, out / "last.pt")
            if set(row) <= set(METRIC_FIELDS):
                _append_metrics(out, row)
            else:  # extra columns (val_accuracy …): rewrite so the CSV header has them
                _write_metrics(out, history)
            _plot_curves(out, history)
            _save_images(model, fixed_x, image_shape, out, "", config.seed, device)
            _save_generation_grid(model, image_shape, out, "", config.seed, device)
            extra = "".join(
                f" {k}={row[k]:.3g}" for k in ("eps", "temperature") if row[k] is not None
            )
            extra += "".join(f" val_{k}={v:.4f}" for k, v in val["labels"].items())
            log(
                f"epoch {epoch + 1}/{config.epochs} it {iteration}: train {means['loss']:.2f} "
                f"(recon {means.get('recon', math.nan):.2f} kl {means.get('kl', math.nan):.2f}) "
                f"val {val['loss']:.2f}{' *' if improved else ''}{extra} [{elapsed:.1f}s]"
            )
    except KeyboardInterrupt:
        log(f"interrupted; continue with --resume --out {out} (from the last finished epoch)")
        raise
    finally:
        restore_sigterm()
    if not ctx.is_main:
        return {"run_dir": str(out), "rank": ctx.rank, "iterations": iteration}

    # final evaluation of the best model on the test set
    if not (out / "best.pt").exists():
        raise CheckpointError(f"no epoch finished, so {out / 'best.pt'} was never written")
    best = load_checkpoint(out / "best.pt")
    model.load_state_dict(best["model"])
    test = _evaluate_model(
        model, splits.test, device, config.seed, iwae_samples=config.eval_samples
    )
    _save_images(model, fixed_x, image_shape, out, "best_", config.seed, device)
    _save_generation_grid(model, image_shape, out, "best_", config.seed, device)
    results = {
        "test_loss": test["loss"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "test_iwae_nll": test["iwae_nll"],
        "iwae_samples": config.eval_samples,
        # what test_loss is: the KL it adds, and whether it estimates a bound on -log p(x)
        "kl_kind": getattr(model, "kl_kind", None),
        "test_loss_is_bound": getattr(model, "loss_is_bound", None),
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "epochs": history[-1]["epoch"] if history else 0,
        "iterations": iteration,
        "time_s": elapsed,
        "dataset": config.dataset,
        "model": config.model,
        "latent": config.latent,
        "estimator": config.estimator,
        "seed": config.seed,
    }
    results.update({f"test_{k}": v for k, v in test["labels"].items()})
    if config.labels is not None:
        results["labels"] = config.labels
    _write_json(out / "results.json", results)
    iwae = test["iwae_nll"]
    iwae_text = "n/a (intractable)" if iwae is None else f"{iwae:.2f}"
    bound = "" if results["test_loss_is_bound"] is not False else " (not a bound)"
    kind = f", KL {results['kl_kind']}" if results["kl_kind"] else ""
    log(
        f"best epoch {best_epoch}: test loss {test['loss']:.2f}{bound}{kind}, "
        f"IWAE NLL ({config.eval_samples} samples) {iwae_text}; results in {out}"
    )
    return {**results, "run_dir": str(out)}
