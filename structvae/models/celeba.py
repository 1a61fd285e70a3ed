"""The CelebA attribute VAE: binary attribute bits (optionally coupled) plus a Gaussian style code.

A convolutional encoder maps a 3×64×64 face to (a) potentials over ``A`` binary attributes —
unary scores θ_a and, with ``pairwise="supermodular" | "general"``, couplings θ_ab on a graph of
the attributes (complete by default: correlated attributes such as Male / No_Beard / Goatee) —
and (b) the mean and log-variance of a Gaussian style code ``s`` (reparameterised). A
convolutional decoder maps the code to Bernoulli logits of the 3×64×64 intensities: by default
``[one-hot bits, s]``, or (``code="block"``) the block form ``[one-hot bits, bits ⊗ s]`` of the
paper's mixed discrete-continuous code, where the style enters in the slot of each attribute's
value, so that switching a bit re-routes the same style code. The loss is BCE on the intensities in [0, 1], summed over pixels and
channels: the usual likelihood of image VAEs (a continuous Bernoulli without its normaliser),
a modelling choice, not a density on [0, 1].

The bits are learned by direct optimization through arg max
(:class:`~structvae.estimators.DirectEstimator`): perturb-and-MAP samples from the structured
solver (``independent``; ``graphcut`` for supermodular couplings; ``exact`` / ``ilp`` for
general ones), and on labelled rows z_ε is the label (attributes in ``y``, -1 = unlabelled).
The priors are uniform on ``{0, 1}^A`` and ``N(0, I)``; the KL is the Gaussian's closed form plus
the attributes' (the exact Gibbs KL up to ``exact_kl_max_vars`` attributes with couplings, the
factorised approximation above; see :mod:`structvae.models.structured` for why, with couplings,
``recon + kl`` is not a bound while :meth:`AttributeVAE.iwae_nll` is).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from ..celeba import CELEBA_IMAGE_SHAPE, parse_attributes
from ..estimators.base import Estimator
from ..options import Option
from ..potentials import Potentials
from ..solvers import Solver
from ..solvers.exact import all_assignments
from .base import VAE
from .objective import EncoderParams, estimator_objective
from .pairwise import EXACT_KL_MAX_VARS, PairwiseBinaryLatents
from .reference import training_kl

__all__ = ["AttributeVAE", "conv_encoder", "conv_decoder", "parse_style_latent", "CODES"]

_STYLE = re.compile(r"^\s*(\d+)\s*$")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_MAX_COMBINATION_ATTRIBUTES = 6
CODES = ("block", "concat")


def parse_style_latent(spec: int | str) -> int:
    """``32`` or ``"32"`` -> the size of the Gaussian style code (``0``: none)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        dim = spec
    else:
        m = _STYLE.match(str(spec))
        if m is None:
            raise ValueError(
                f"latent spec {spec!r}: the celeba model's --latent is the size of its Gaussian "
                "style code (e.g. --latent 32); its binary latents are the --attributes"
            )
        dim = int(m.group(1))
    if dim < 0:
        raise ValueError(f"the style-code size must be >= 0, got {dim}")
    return dim


def conv_encoder(channels: int, hidden: int) -> nn.Sequential:
    """``[B, 3, 64, 64] -> [B, hidden]``: four stride-2 4×4 convolutions (c, 2c, 4c, 8c channels,
    64 → 4 pixels), then a linear layer; ReLU."""
    c = [CELEBA_IMAGE_SHAPE[0], channels, 2 * channels, 4 * channels, 8 * channels]
    layers: list[nn.Module] = []
    for a, b in zip(c[:-1], c[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c[-1] * 16, hidden), nn.ReLU())


def conv_decoder(in_dim: int, channels: int, hidden: int) -> nn.Sequential:
    """``[N, in_dim] -> [N, 3, 64, 64]`` logits: linear layers to 8c×4×4, then four stride-2 4×4
    transposed convolutions (4c, 2c, c, 3 channels); ReLU between."""
    c = [8 * channels, 4 * channels, 2 * channels, channels, CELEBA_IMAGE_SHAPE[0]]
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c[0] * 16),
        nn.ReLU(),
        nn.Unflatten(1, (c[0], 4, 4)),
    ]
    for i, (a, b) in enumerate(zip(c[:-1], c[1:], strict=True)):
        layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(c) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AttributeVAE(PairwiseBinaryLatents, EncoderParams, VAE):
    """CelebA VAE with ``A`` binary attribute latents and a Gaussian style code (module docstring).

    Args:
        attributes: CelebA attribute names (``"Eyeglasses,Smiling,Male"`` by default; ``"all"``),
            see :func:`structvae.celeba.parse_attributes`.
        style_dim: size of the Gaussian style code (default 32).
        pairwise: ``"none"`` (independent bits, default), ``"supermodular"`` (softplus
            couplings, graph cut) or ``"general"`` (couplings of any sign: exact / ilp).
        graph: the attribute graph of the couplings (default ``"complete"``).
        solver: arg-max solver for samples, reconstructions and accuracy (default by structure).
        channels, hidden: conv widths (c, 2c, 4c, 8c) and the fully connected width.
        code: the decoder's input. ``"concat"`` (default): ``[one-hot bits, style]``.
            ``"block"``: the one-hot bits and the outer product ``bits ⊗ style`` (``2A·S``
            entries: the style code sits in the slot of each attribute's value, as in the
            paper's mixed discrete-continuous code). With either, nothing stops the decoder from
            ignoring the bits and letting the style carry an attribute; see docs/celeba.md.
        exact_kl_max_vars: Gibbs KL by enumeration up to this many attributes (with couplings).
        input_dim: must be 3·64·64 (the trainer passes the dataset's size).

    The trainer interface is :class:`~structvae.models.CategoricalVAE`'s, with ``uses_labels``;
    plus :meth:`label_metrics` and :meth:`attribute_grid`.
    """

    name = "celeba"
    options = (
        Option("attributes", str, None, "CelebA attribute names (comma-separated, or 'all')"),
        Option("pairwise", str, "none", "the coupling family", ("supermodular", "general", "none")),
        Option("graph", str, "complete", "the attribute graph of the couplings"),
        Option("code", str, "concat", "the decoder's input code", CODES),
        Option("channels", int, 32, "convolution width c (c, 2c, 4c, 8c)"),
        Option("hidden", int, 256, "the fully connected width"),
    )
    uses_labels = True
    structure_label = "the celeba model's attributes"

    def __init__(
        self,
        attributes: str | Sequence[str] | None = None,
        style_dim: int = 32,
        pairwise: str = "none",
        graph: str | nx.Graph | torch.Tensor | None = "complete",
        solver: str | Solver | None = None,
        channels: int = 32,
        hidden: int = 256,
        code: str = "concat",
        exact_kl_max_vars: int = EXACT_KL_MAX_VARS,
        input_dim: int = int(math.prod(CELEBA_IMAGE_SHAPE)),
    ) -> None:
        super().__init__()
        if int(input_dim) != math.prod(CELEBA_IMAGE_SHAPE):
            raise ValueError(
                f"the celeba model takes 3x64x64 images (input_dim {math.prod(CELEBA_IMAGE_SHAPE)}"
                f", --dataset celeba), got input_dim {input_dim}"
            )
        if int(channels) < 1 or int(hidden) < 1:
            raise ValueError(f"channels and hidden must be positive, got {channels}, {hidden}")
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}")
        self.code = code
        self.attributes = parse_attributes(attributes)
        A = len(self.attributes)
        self._init_pairwise(A, pairwise, graph, solver, exact_kl_max_vars)
        self.style_dim = parse_style_latent(style_dim)
        self.channels, self.hidden = int(channels), int(hidden)
        self.input_dim = int(input_dim)
        self.encoder = conv_encoder(self.channels, self.hidden)
        self.attribute_head = nn.Linear(self.hidden, A + self.num_edges)
        self.style_head = nn.Linear(self.hidden, 2 * self.style_dim)
        code_dim = 2 * A + (2 * A if code == "block" else 1) * self.style_dim
        self.decoder = conv_decoder(code_dim, self.channels, self.hidden)

    @classmethod
    def from_spec(cls, latent: int | str = 32, **kw) -> AttributeVAE:
        """Build from a latent spec: the style-code size (``32``); attributes come in ``kw``."""
        return cls(style_dim=parse_style_latent(latent), **kw)

    def extra_repr(self) -> str:
        return (
            f"attributes={','.join(self.attributes)}, style_dim={self.style_dim}, "
            f"pairwise={self.pairwise!r} ({self.num_edges} edges), solver={self.solver.name!r}, "
            f"kl_kind={self.kl_kind!r}, code={self.code!r}, channels={self.channels}, "
            f"hidden={self.hidden}"
        )

    # ------------------------------------------------------------ the model
    def encode_all(self, x: torch.Tensor) -> tuple[Potentials, torch.Tensor, torch.Tensor]:
        """``x [B, 12288]`` or ``[B, 3, 64, 64]`` -> (attribute potentials ``[B, A, 2]`` with the
        couplings, style mean ``[B, S]``, style log-variance ``[B, S]``)."""
        h = self.encoder(x.reshape(-1, *CELEBA_IMAGE_SHAPE).to(self._dtype))
        out = self.attribute_head(h)
        A = self.num_latents
        mu, logvar = self.style_head(h).chunk(2, dim=-1)
        return self.binary_potentials(out[:, :A], out[:, A:]), mu, logvar.clamp(-20.0, 10.0)

    def encode(self, x: torch.Tensor) -> Potentials:
        """``x`` -> the attribute potentials (binary form, the module's edges)."""
        return self.encode_all(x)[0]

    def decode(self, z: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` float ``[..., A, 2]`` (one-hot) and ``style [..., S]`` (default 0, the prior
        mean) -> Bernoulli logits ``[..., 12288]`` (the code: see ``code`` in the class doc)."""
        lead = z.shape[:-2]
        if style is None:
            style = z.new_zeros(*lead, self.style_dim)
        style = style.to(z.dtype).expand(*lead, self.style_dim)
        if self.code == "block":
            style = (z[..., None] * style[..., None, None, :]).reshape(*lead, -1)  # [..., 2A·S]
        code = torch.cat([z.reshape(*lead, -1), style], -1)
        out = self.decoder(code.reshape(-1, code.shape[-1]).to(self._dtype))
        return out.reshape(*lead, self.input_dim)

    def _recon(self, x: torch.Tensor, z: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """−log p(x|z, s): ``z [B, C, A, 2]``, ``style [B, S]`` or ``[B, C, S]`` -> ``[B, C]``."""
        B, C = z.shape[:2]
        if style.dim() == 2:
            style = style[:, None]
        logits = self.decode(z, style.expand(B, C, self.style_dim))
        target = x.reshape(B, 1, -1).to(logits.dtype).expand(B, C, self.input_dim)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def loss_fn(
        self, x: torch.Tensor, style: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The estimators' loss ``z [B, C, A, 2] -> [B, C]`` at a fixed style code ``[B, S]``
        (default: the encoder's mean), BCE summed over the 3·64·64 intensities."""
        if style is None:
            style = self.encode_all(x)[1]

        def fn(z: torch.Tensor) -> torch.Tensor:
            return self._recon(x, z, style)

        return fn

    @staticmethod
    def style_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(mu, exp logvar) || N(0, I))`` ``[B]``, closed form."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)

    def _style_sample(self, mu, logvar, samples: int | None = None, generator=None):
        """Reparameterised ``mu + σ·ε``: ``[B, S]``, or ``[B, samples, S]``."""
        shape = mu.shape if samples is None else (mu.shape[0], samples, mu.shape[1])
        eps = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
        if samples is not None:
            mu, logvar = mu[:, None], logvar[:, None]
        return mu + (0.5 * logvar).exp() * eps, eps

    def objective(
        self, x: torch.Tensor, estimator: Estimator, y: torch.Tensor | None = None, **kw
    ) -> tuple[torch.Tensor, dict]:
        """Estimator surrogate + mean KL (attributes + style) and the batch statistics.

        ``y`` long ``[B, A]``: attribute labels, -1 where unlabelled; rows with every label
        present are passed to the estimator as ``labels`` (direct: z_ε = the label). Statistic
        ``labelled`` is the fraction of such rows."""
        self.use_model_solver(estimator)
        potentials, mu, logvar = self.encode_all(x)
        style, _ = self._style_sample(mu, logvar)
        labelled = None
        if y is not None:
            y = torch.as_tensor(y, device=x.device).long().reshape(x.shape[0], self.num_latents)
            labelled = (y >= 0).all(1)
            if bool(labelled.any()):
                if "labels" not in inspect.signature(estimator.estimate).parameters:
                    raise ValueError(
                        f"estimator {estimator.name!r} cannot learn from attribute labels; use "
                        "--estimator direct, or --label-fraction 0 for an unsupervised run"
                    )
                kw["labels"] = y
        res = estimator(potentials, self.loss_fn(x, style), **kw)
        kl = self.kl(potentials) + self.style_kl(mu, logvar)
        total, stats = estimator_objective(res, kl, training_kl(self, estimator, kl))
        if labelled is not None:
            stats["labelled"] = labelled.float().mean()
        return total, stats

    # --------------------------------------------------------- evaluation
    @torch.no_grad()
    def one_sample_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """BCE at one perturb-max attribute sample and one style sample, plus the KL; each ``[B]``
        (not a bound when there are couplings; see the module docstring)."""
        potentials, mu, logvar = self.encode_all(x)
        z = self.perturb_max(potentials, generator)
        style, _ = self._style_sample(mu, logvar, generator=generator)
        recon = self._recon(x, self._one_hot(z)[:, None], style)[:, 0]
        kl = self.kl(potentials) + self.style_kl(mu, logvar)
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def iwae_nll(
        self,
        x: torch.Tensor,
        samples: int = 100,
        generator: torch.Generator | None = None,
        chunk_rows: int = 2000,
    ) -> torch.Tensor:
        """Importance-weighted −log p(x) ``[B]``, an upper bound in expectation.

        Proposal: the Gibbs q of the attributes (exact samples by enumeration; with couplings on
        more than ``exact_kl_max_vars`` attributes, the factorised unary q instead — any proposal
        with exact probabilities gives a bound, this one is looser) times the Gaussian q(s|x)."""
        samples = int(samples)
        if samples < 1:
            raise ValueError(f"iwae_nll needs samples >= 1, got {samples}")
        potentials, mu, logvar = self.encode_all(x)
        ft = torch.promote_types(self._dtype, torch.float32)
        mu, logvar = mu.to(ft), logvar.to(ft)
        z, log_qz = self.proposal_samples(
            potentials, samples, generator, ft, gibbs=self.iwae_available
        )
        style, eps = self._style_sample(mu, logvar, samples, generator)  # [B, S, D_s]
        log_qs = -(eps.pow(2) / 2 + _HALF_LOG_2PI + logvar[:, None] / 2).sum(-1)
        log_ps = -(style.pow(2) / 2 + _HALF_LOG_2PI).sum(-1)
        log_prior_z = -self.num_latents * math.log(2)
        step = max(1, int(chunk_rows) // max(x.shape[0], 1))
        log_px = torch.cat(
            [
                -self._recon(x, self._one_hot(z[:, s : s + step]), style[:, s : s + step]).to(ft)
                for s in range(0, samples, step)
            ],
            dim=1,
        )
        log_w = log_px + log_prior_z + log_ps - log_qz - log_qs
        return -(torch.logsumexp(log_w, dim=1) - math.log(samples))

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images from the priors (uniform bits, N(0, I) style): ``[num, 12288]``."""
        dev = self._device
        z = torch.randint(2, (int(num), self.num_latents), device=dev, generator=generator)
        s = torch.randn(int(num), self.style_dim, device=dev, generator=generator)
        return torch.sigmoid(self.decode(self._one_hot(z), s.to(self._dtype)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's noise-free arg max of the attribute potentials: long ``[B, A]``."""
        return self.solver(self.encode(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 12288]`` decoded from the arg max attributes and the style mean."""
        potentials, mu, _ = self.encode_all(x)
        return torch.sigmoid(self.decode(self._one_hot(self.solver(potentials)), mu))

    @torch.no_grad()
    def label_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row attribute accuracy of :meth:`predict` against ``y`` long ``[B, A]``.

        ``"accuracy"``: the fraction of the row's labelled attributes predicted right;
        ``"acc_<Attribute>"``: 1/0 per attribute. Float ``[B]``; NaN where ``y`` is -1 (or, for
        ``"accuracy"``, where the whole row is)."""
        y = torch.as_tensor(y, device=x.device).long().reshape(x.shape[0], self.num_latents)
        labelled = y >= 0
        correct = (self.predict(x) == y).float()
        per = torch.where(labelled, correct, torch.full_like(correct, math.nan))
        out = {"accuracy": (correct * labelled).sum(1) / labelled.sum(1)}
        out["accuracy"] = torch.where(labelled.any(1), out["accuracy"], math.nan)
        for a, name in enumerate(self.attributes):
            out[f"acc_{name}"] = per[:, a]
        return out

    @torch.no_grad()
    def attribute_grid(
        self,
        x: torch.Tensor | None = None,
        num: int = 8,
        generator: torch.Generator | None = None,
        combinations: bool = False,
    ) -> tuple[torch.Tensor, list[str]]:
        """The paper's Fig. 5: images whose attributes are switched for one style code per row.

        Rows: the images ``x`` (style = the encoder's mean, base bits = its arg max) or, without
        ``x``, ``num`` style codes from N(0, I) with uniform base bits. Columns: the base
        decoding, then every attribute off and on with the others as in the base
        (``1 + 2A`` columns); with ``combinations=True``, every one of the ``2^A`` settings
        (``A <= 6``). Returns pixel probabilities ``[rows, columns, 3, 64, 64]`` and a title per
        column.
        """
        A, dev = self.num_latents, self._device
        if x is not None:
            potentials, style, _ = self.encode_all(x.to(dev))
            base = self.solver(potentials)
            first = "reconstruction"
        else:
            n = int(num)
            style = torch.randn(n, self.style_dim, device=dev, generator=generator)
            base = torch.randint(2, (n, A), device=dev, generator=generator)
            first = "sample"
        R = base.shape[0]
        if combinations:
            if A > _MAX_COMBINATION_ATTRIBUTES:
                raise ValueError(
                    f"combinations=True draws 2^A columns; A = {A} is above "
                    f"{_MAX_COMBINATION_ATTRIBUTES}"
                )
            settings = all_assignments(A, 2, device=dev)[None].expand(R, -1, -1)  # [R, 2^A, A]
            titles = [
                " ".join(
                    f"{n}{'+' if v else '-'}" for n, v in zip(self.attributes, row, strict=True)
                )
                for row in settings[0].tolist()
            ]
        else:
            switched = base[:, None, None, :].repeat(1, A, 2, 1)  # [R, A, 2, A]
            idx = torch.arange(A, device=dev)
            switched[:, idx, :, idx] = torch.arange(2, device=dev)
            settings = torch.cat([base[:, None], switched.reshape(R, 2 * A, A)], 1)
            titles = [first] + [f"{n} {s}" for n in self.attributes for s in ("off", "on")]
        C = settings.shape[1]
        probs = torch.sigmoid(self.decode(self._one_hot(settings), style[:, None].to(self._dtype)))
        return probs.reshape(R, C, *CELEBA_IMAGE_SHAPE), titles

    def grids(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """``{"attribute_grid": (images [R·(1 + 2A), 3, 64, 64], 1 + 2A)}``: :meth:`attribute_grid`
        of the first eight images of ``x`` (rows: images; columns: reconstruction, each
        attribute off / on)."""
        images, titles = self.attribute_grid(x[:8], generator=generator)
        return {"attribute_grid": (images.flatten(0, 1), len(titles))}
