"""The attribute VAE on synthetic faces, through the unchanged CelebA loader (issue 12).

    python experiments/attribute_faces.py --images 3000 --epochs 20 --out results/attribute

1. ``structvae.faces.make_synthetic_celeba`` writes the faces in CelebA's formats;
2. an attribute classifier (a small conv net, independent of the VAE) is trained on the
   generated *labelled* training images (all labels) and its test accuracy is reported;
3. the attribute VAE (conv pair, narrow widths for CPU) is trained by direct optimization with
   ``--label-fraction`` of the training labels, read through ``load_dataset("celeba", ...)``;
4. switch success on the test faces: the classifier calls the attribute on in the image
   decoded with the bit on and off in the one decoded with it off; others kept: the classifier's
   calls of the other attributes agree between the two images.

Writes ``faces.json`` and ``faces_grid.png`` under ``--out``.
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

from structvae.data import load_dataset, make_loader
from structvae.estimators import DirectEstimator
from structvae.faces import make_synthetic_celeba
from structvae.grids import save_image_table
from structvae.models import AttributeVAE

ATTRIBUTES = ("Eyeglasses", "Smiling", "Male")


def classifier() -> nn.Sequential:
    """``[B, 3, 64, 64] -> [B, 3]`` attribute logits."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 3),
    )  # fmt: skip


def train_classifier(train, test, epochs: int, seed: int) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for x, y in make_loader(train, 64, shuffle=True, seed=seed):
            loss = F.binary_cross_entropy_with_logits(net(x.view(-1, 3, 64, 64)), y.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    x, y = test[list(range(len(test)))]
    with torch.no_grad():
        acc = ((net(x.view(-1, 3, 64, 64)) > 0).long() == y).float().mean(0)
    return net.eval(), acc.tolist()


def train_vae(train, args) -> tuple[AttributeVAE, float]:
    torch.manual_seed(args.seed)
    model = AttributeVAE(
        ",".join(ATTRIBUTES), args.style, channels=args.channels, hidden=args.hidden,
        cycle=args.cycle, style_kl=args.style_kl,
    )  # fmt: skip
    est = DirectEstimator(eps=args.eps, label_eps=0.01)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t0 = time.time()
    for epoch in range(args.epochs):
        for x, y in make_loader(train, args.batch, shuffle=True, seed=args.seed + epoch):
            total, stats = model.objective(x, est, y=y)
            opt.zero_grad()
            total.backward()
            opt.step()
        print(f"epoch {epoch}: loss {float(stats['loss']):.1f} ({time.time() - t0:.0f} s)")
    return model.eval(), time.time() - t0


@torch.no_grad()
def switch_scores(model: AttributeVAE, net: nn.Module, x: torch.Tensor) -> dict:
    """Per attribute: switch success and others kept, judged by the classifier ``net``."""
    out = {}
    for j, name in enumerate(ATTRIBUTES):
        on = (net(model.switch(x, name, True)) > 0).long()
        off = (net(model.switch(x, name, False)) > 0).long()
        others = [k for k in range(len(ATTRIBUTES)) if k != j]
        success = (on[:, j] == 1) & (off[:, j] == 0)
        kept = (on[:, others] == off[:, others]).all(1)
        out[name] = {
            "switch_success": float(success.float().mean()),
            "others_kept": float(kept.float().mean()),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--style", type=int, default=4)
    p.add_argument("--style-kl", type=float, default=2.0)
    p.add_argument("--cycle", type=float, default=4.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/attribute")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        make_synthetic_celeba(folder, num_images=args.images, seed=args.seed)
        attrs = ",".join(ATTRIBUTES)
        full = load_dataset("celeba", root=folder, binarize="none", attributes=attrs)
        part = load_dataset(
            "celeba", root=folder, binarize="none", attributes=attrs,
            label_fraction=args.label_fraction,
        )  # fmt: skip
        net, clf_acc = train_classifier(full.train, full.test, args.classifier_epochs, args.seed)
        print("classifier test accuracy", clf_acc)
        model, seconds = train_vae(part.train, args)
        x, y = full.test[list(range(len(full.test)))]
        acc = (model.predict(x) == y).float().mean(0).tolist()
        scores = switch_scores(model, net, x)
        images, titles = model.attribute_grid(x[:6])
        save_image_table(images, titles, out / "faces_grid.png")
    res = {
        "command": "python experiments/attribute_faces.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "classifier_test_accuracy": dict(zip(ATTRIBUTES, clf_acc, strict=True)),
        "encoder_test_accuracy": dict(zip(ATTRIBUTES, acc, strict=True)),
        "switch": scores,
        "train_seconds": seconds,
        "test_images": len(full.test),
    }
    (out / "faces.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
