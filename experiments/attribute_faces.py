"""The attribute VAE on synthetic faces, through the unchanged CelebA loader (issue 12).

    python experiments/attribute_faces.py --steps 18000 --channels 8 --hidden 64 --style 8 \
        --cycle 100 --label-eps 0.001 --out results/attribute
    # or judge a run of the CLI on faces written by `structvae make-celeba-demo demo/`:
    python experiments/attribute_faces.py --data-root demo/ --run runs/<run folder>

1. ``structvae.faces.make_synthetic_celeba`` writes the faces in CelebA's formats (or
   ``--data-root`` names a folder of them); they are read once with ``load_dataset("celeba")``;
2. the judge, an attribute classifier (a small conv net, independent of the VAE), is trained on
   the generated *labelled* training images (all labels; half of each batch blurred, since the
   VAE's decoded means are smooth) and its test accuracy is reported;
3. the attribute VAE (conv pair, narrow widths for CPU) is trained by direct optimization with
   ``--label-fraction`` of the training labels (or ``--run`` loads a trained one);
4. switch success on the test faces: the judge calls the attribute on in the image decoded with
   the bit on and off in the one decoded with it off; others kept: the judge's calls of the
   other attributes agree between the two images; also per group (bearded men, men without a
   beard, women).

Writes ``faces.json``, ``faces_grid.png`` (and the trained ``faces_model.pt``) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from structvae.data import load_dataset
from structvae.estimators import DirectEstimator
from structvae.faces import make_synthetic_celeba
from structvae.grids import save_image_table
from structvae.models import AttributeVAE
from structvae.training import load_model

ATTRIBUTES = ("Eyeglasses", "Smiling", "Male")


def classifier() -> nn.Sequential:
    """``[B, 3, 64, 64] -> [B, 3]`` attribute logits."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 3),
    )  # fmt: skip


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x [B, 3, 64, 64]`` blurred by a Gaussian of standard deviation ``sigma [B]`` (pixels;
    0: unchanged): the judge sees smooth images in training, as the VAE's decoded means are."""
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True))[:, None, None, :]  # [B, 1, 1, 7]
    B = x.shape[0]
    out = x.reshape(1, B * 3, 64, 64)
    kh = k.repeat_interleave(3, 0)
    out = F.conv2d(F.pad(out, (3, 3, 0, 0), mode="replicate"), kh, groups=B * 3)
    out = F.conv2d(F.pad(out, (0, 0, 3, 3), mode="replicate"), kh.transpose(2, 3), groups=B * 3)
    return out.reshape_as(x)


def batches(n: int, size: int, seed: int):
    """Index batches of one shuffled epoch over ``n`` rows."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g).split(size)


def train_classifier(x, y, xt, yt, epochs: int, seed: int) -> tuple[nn.Module, list[float]]:
    """The judge: trained on the generated images ``x [N, 3, 64, 64]`` with all labels ``y``
    (half of each batch blurred by sigma ~ U(0, 1.5)); test accuracy per attribute on ``xt``."""
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in tqdm(range(epochs), desc="classifier", leave=False):
        for idx in batches(len(x), 64, seed + epoch):
            xb = x[idx]
            sigma = torch.rand(len(idx)) * 1.5 * (torch.rand(len(idx)) < 0.5)
            loss = F.binary_cross_entropy_with_logits(net(blur(xb, sigma)), y[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = ((net(xt) > 0).long() == yt).float().mean(0)
    return net.eval(), acc.tolist()


def train_vae(x, y, args) -> tuple[AttributeVAE, float]:
    """The attribute VAE on ``x [N, 12288]`` with labels ``y`` (-1: unlabelled), ``args.steps``
    Adam steps of ``args.batch`` rows."""
    torch.manual_seed(args.seed)
    model = AttributeVAE(
        ",".join(ATTRIBUTES), args.style, channels=args.channels, hidden=args.hidden,
        cycle=args.cycle, style_kl=args.style_kl,
    )  # fmt: skip
    est = DirectEstimator(eps=args.eps, label_eps=args.label_eps)
    opt = torch.optim.Adam(model.parameters(), args.lr)
    t0, step, epoch = time.time(), 0, 0
    bar = tqdm(total=args.steps, desc="attribute VAE")
    while step < args.steps:
        for idx in batches(len(x), args.batch, args.seed + epoch):
            total, stats = model.objective(x[idx], est, y=y[idx])
            opt.zero_grad()
            total.backward()
            opt.step()
            step += 1
            bar.update()
            if step % 100 == 0:
                bar.set_postfix(loss=f"{float(stats['loss']):.0f}")
            if step >= args.steps:
                break
        epoch += 1
    bar.close()
    return model.eval(), time.time() - t0


@torch.no_grad()
def switch_rows(model: AttributeVAE, net: nn.Module, x: torch.Tensor) -> dict:
    """Per attribute, per row of ``x``: (switch success, others kept), bool ``[B]`` each, judged
    by the classifier ``net``."""
    out = {}
    for j, name in enumerate(ATTRIBUTES):
        on = (net(model.switch(x, name, True)) > 0).long()
        off = (net(model.switch(x, name, False)) > 0).long()
        others = [k for k in range(len(ATTRIBUTES)) if k != j]
        out[name] = ((on[:, j] == 1) & (off[:, j] == 0), (on[:, others] == off[:, others]).all(1))
    return out


def summarise(per_row: dict, rows: torch.Tensor | None = None) -> dict:
    """The fractions of :func:`switch_rows`'s ``per_row`` over ``rows`` (bool ``[B]``; all)."""
    sel = slice(None) if rows is None else rows
    return {
        name: {
            "switch_success": float(success[sel].float().mean()),
            "others_kept": float(kept[sel].float().mean()),
        }
        for name, (success, kept) in per_row.items()
    }


def switch_scores(model: AttributeVAE, net: nn.Module, x: torch.Tensor) -> dict:
    """Per attribute: switch success and others kept on ``x``, judged by the classifier ``net``."""
    return summarise(switch_rows(model, net, x))


def read_faces(folder: str | Path, label_fraction: float) -> dict[str, torch.Tensor]:
    """The faces under ``folder``, decoded once through the CelebA loader: training images
    ``x [N, 12288]`` with all labels ``y`` and the kept ones ``y_part`` (-1: unlabelled), test
    images ``xt`` / ``yt``, and the test faces' ``No_Beard`` labels ``beard`` ``[M]``."""
    attrs = ",".join(ATTRIBUTES)
    full = load_dataset("celeba", root=folder, binarize="none", attributes=attrs)
    part = load_dataset(
        "celeba", root=folder, binarize="none", attributes=attrs, label_fraction=label_fraction
    )
    beard = load_dataset("celeba", root=folder, binarize="none", attributes="No_Beard")
    x, y = full.train[list(range(len(full.train)))]
    xt, yt = full.test[list(range(len(full.test)))]
    return {"x": x, "y": y, "y_part": part.train.y, "xt": xt, "yt": yt, "beard": beard.test.y[:, 0]}


def judge(model: AttributeVAE, net: nn.Module, data: dict) -> dict:
    """Encoder accuracy, switch scores on all test faces and by group (bearded men, men
    without a beard, women)."""
    xt, yt = data["xt"], data["yt"]
    groups = {
        "bearded men": (yt[:, 2] == 1) & (data["beard"] == 0),
        "men without beard": (yt[:, 2] == 1) & (data["beard"] == 1),
        "women": yt[:, 2] == 0,
    }
    per_row = switch_rows(model, net, xt)  # decoded once, summarised for all and per group
    return {
        "encoder_test_accuracy": dict(
            zip(ATTRIBUTES, (model.predict(xt) == yt).float().mean(0).tolist(), strict=True)
        ),
        "switch": summarise(per_row),
        "switch_by_group": {
            g: {"images": int(rows.sum()), **summarise(per_row, rows)}
            for g, rows in groups.items()
            if rows.any()
        },
    }


_TRAINING = {
    "steps", "lr", "batch", "style", "style_kl", "cycle", "channels", "hidden", "eps", "label_eps",
}  # fmt: skip


def _recorded(args) -> dict:
    """The arguments that made the result (``--run``: the run folder holds the training's)."""
    skip = set(_TRAINING) if args.run else set()
    if args.data_root:
        skip.add("images")
    return {k: v for k, v in vars(args).items() if v is not None and k not in skip}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4000, help="faces to generate")
    p.add_argument("--data-root", help="judge on these faces (make-celeba-demo) instead")
    p.add_argument("--run", help="judge this run folder's model (structvae train) instead")
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--style", type=int, default=4)
    p.add_argument("--style-kl", type=float, default=2.0)
    p.add_argument("--cycle", type=float, default=4.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--label-eps", type=float, default=0.01)
    p.add_argument("--classifier-epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/attribute")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data_root is None:
        with tempfile.TemporaryDirectory() as folder:
            make_synthetic_celeba(folder, num_images=args.images, seed=args.seed)
            data = read_faces(folder, args.label_fraction)
    else:
        data = read_faces(args.data_root, args.label_fraction)
    net, clf_acc = train_classifier(
        data["x"].view(-1, 3, 64, 64), data["y"], data["xt"].view(-1, 3, 64, 64), data["yt"],
        args.classifier_epochs, args.seed,
    )  # fmt: skip
    print("classifier test accuracy", clf_acc)
    if args.run is None:
        model, seconds = train_vae(data["x"], data["y_part"], args)
        torch.save(model.state_dict(), out / "faces_model.pt")
    else:
        model, seconds = load_model(args.run), None
    images, titles = model.attribute_grid(data["xt"][:6])
    save_image_table(images, titles, out / "faces_grid.png")
    res = {
        "command": "python experiments/attribute_faces.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in _recorded(args).items()),
        "classifier_test_accuracy": dict(zip(ATTRIBUTES, clf_acc, strict=True)),
        **judge(model, net, data),
        "train_seconds": seconds,
        "test_images": len(data["xt"]),
        "labelled_train_images": int((data["y_part"] >= 0).all(1).sum()),
    }
    (out / "faces.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
