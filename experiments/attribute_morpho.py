"""The attribute VAE on Morpho-MNIST: accuracy, switch success, others kept, IWAE NLL (issue 12).

    python experiments/attribute_morpho.py --dataset morpho-mnist-sample --label-fraction 0.1
    python experiments/attribute_morpho.py --correlation 0.8 --pairwise supermodular ...

Trains :class:`~structvae.models.AttributeVAE` by direct optimization (ε = 0.1, labelled rows
z_ε = label with ε 0.01, Adam 1e-3, batch 100) and evaluates on the test split:

- ``encoder_accuracy``: the noise-free arg max against the labels, per attribute;
- ``switch_success`` / ``others_kept``: :mod:`structvae.morphometrics` on the decoded images
  (the on/off differences from the test images themselves);
- ``true_transform``: the same two metrics for the true transforms applied to the test digits
  (the ceiling of "others kept" for these measurements);
- ``supervised_classifier``: an MLP of the encoder's shape trained on *all* training labels;
- ``iwae_nll``: the importance-weighted bound, ``--iwae-samples`` samples.

One JSON line per run is appended to ``--out`` (``results/attribute/morpho.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from structvae.data import load_dataset
from structvae.estimators import DirectEstimator
from structvae.models import AttributeVAE, mlp
from structvae.morpho import MORPHO_ATTRIBUTES, apply_attributes
from structvae.morphometrics import measure, on_off_difference, switch_metrics


def train_model(train, args) -> tuple[AttributeVAE, float]:
    torch.manual_seed(args.seed)
    model = AttributeVAE(
        None, args.style, pairwise=args.pairwise, cycle=args.cycle, style_kl=args.style_kl,
        input_dim=784,
    )  # fmt: skip
    est = DirectEstimator(eps=args.eps, label_eps=0.01)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    n, t0 = len(train), time.time()
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        for i in range(0, n, args.batch):
            x, y = train[perm[i : i + args.batch]]
            total, stats = model.objective(x, est, y=y)
            opt.zero_grad()
            total.backward()
            opt.step()
        print(f"epoch {epoch}: loss {float(stats['loss']):.1f} ({time.time() - t0:.0f} s)")
    return model.eval(), time.time() - t0


def supervised_accuracy(train, test, epochs: int, seed: int) -> list[float]:
    """Test accuracy of a 784-300-300-3 MLP trained on every training label."""
    torch.manual_seed(seed)
    net = mlp([784, 300, 300, 3])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = train.x, train.full_y
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            loss = F.binary_cross_entropy_with_logits(net(x[idx]), y[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt = test[list(range(len(test)))]
    with torch.no_grad():
        return ((net(xt) > 0).long() == yt).float().mean(0).tolist()


def true_transform_metrics(digits: torch.Tensor, bits: torch.Tensor, binarize: bool) -> dict:
    """Switch metrics of the true transforms on ``digits`` with attribute ``bits``."""

    def render(b):
        img = apply_attributes(digits, b)
        return (img > 0.5).float() if binarize else img

    d = on_off_difference(measure(render(bits)), bits, MORPHO_ATTRIBUTES)
    on, off = {}, {}
    for j, a in enumerate(MORPHO_ATTRIBUTES):
        b1, b0 = bits.clone(), bits.clone()
        b1[:, j], b0[:, j] = 1, 0
        on[a], off[a] = render(b1), render(b0)
    return switch_metrics(on, off, d)


@torch.no_grad()
def evaluate(model: AttributeVAE, test, iwae_samples: int) -> dict:
    x, y = test[list(range(len(test)))]
    out: dict[str, float] = {}
    for i in range(0, len(x), 500):
        m = model.label_metrics(x[i : i + 500], y[i : i + 500])
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + float(v.sum())
    res = {k: v / len(x) for k, v in out.items()}
    if iwae_samples:
        g = torch.Generator().manual_seed(0)
        nll = torch.cat(
            [model.iwae_nll(x[i : i + 500], iwae_samples, g) for i in range(0, len(x), 500)]
        )
        res["iwae_nll"] = float(nll.mean())
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="morpho-mnist-sample")
    p.add_argument("--data-root", default=None)
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--correlation", type=float, default=None)
    p.add_argument("--draws", type=int, default=None, help="training draws per digit")
    p.add_argument("--pairwise", default="none")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--style", type=int, default=4)
    p.add_argument("--style-kl", type=float, default=2.0)
    p.add_argument("--cycle", type=float, default=4.0)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--iwae-samples", type=int, default=100)
    p.add_argument("--classifier-epochs", type=int, default=0, help="0: skip the classifier")
    p.add_argument("--true-transforms", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--out", default="results/attribute/morpho.jsonl")
    args = p.parse_args()
    torch.set_num_threads(1)
    opts = {"label_fraction": args.label_fraction}
    if args.correlation is not None:
        opts["correlation"] = args.correlation
    if args.draws is not None:
        opts["draws"] = args.draws
    splits = load_dataset(args.dataset, root=args.data_root, **opts)
    res: dict = {"args": vars(args)}
    if args.classifier_epochs:
        full = load_dataset(args.dataset, root=args.data_root, **{**opts, "label_fraction": 1.0})
        full.train.full_y = full.train.y
        res["supervised_classifier"] = supervised_accuracy(
            full.train, full.test, args.classifier_epochs, args.seed
        )
        print("supervised classifier", res["supervised_classifier"])
    if args.true_transforms:
        from structvae.data.mnist_sample import _load_mnist_sample

        arrays, _ = _load_mnist_sample(0, None)
        res["true_transform"] = true_transform_metrics(arrays["test"][0], splits.test.y, True)
    model, seconds = train_model(splits.train, args)
    res["train_seconds"] = seconds
    res["test"] = evaluate(model, splits.test, args.iwae_samples)
    print(json.dumps(res))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(res) + "\n")
    if args.tag:
        from structvae.grids import save_image_table

        x, _ = splits.test[list(range(0, 500, 63))]
        images, titles = model.attribute_grid(x)
        save_image_table(images, titles, out.parent / f"grid_{args.tag}.png")


if __name__ == "__main__":
    main()
