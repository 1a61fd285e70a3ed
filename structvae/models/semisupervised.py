"""Semi-supervised VAE with a discrete class and a class-dependent Gaussian code (Kingma et al.'s
M2, trained by direct optimization through the class arg max as in Lorberbom et al. 2019).

    h = trunk(x)                                    784-400-200, LeakyReLU
    θ = class_head(h)         [B, 1, K]             the class potentials (logits of q(c|x))
    μ, log σ² = gauss_head(h) [B, K, d] each        one Gaussian row per class, shared weights
    z_c = μ_c + σ_c · e       e ~ N(0, I) [B, d]    (the same e for every class row)
    code = onehot(c) ⊗ z_c    [B, K·d]              the block one-hot code the decoder reads
    −log p(x | c, z_c) = BCE(decoder(code), x)

The estimators' loss of a class candidate ``c`` is ``L(c) = BCE(c) + KL(N(μ_c, σ_c²) || N(0, I))``
(analytic), so direct optimization's arg max over the K classes sees the whole per-class bound;
the class KL ``KL(q(c|x) || uniform)`` is :meth:`SemiSupervisedVAE.kl`, analytic and trained.
Labelled rows (``y >= 0``) use the label: their loss is ``L(y)`` whatever the candidate (M2's
labelled bound), their class KL is the constant ``−log p(y) = log K``, and the classifier learns
from (a) direct loss minimisation, ``z_ε = y`` with ε = ``label_eps`` (an estimate of
∇ CE(θ, y) / label_eps) when the estimator takes ``labels=``, or (b) ``alpha · CE(θ, y)``
otherwise (the Gumbel-softmax baseline, as in M2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import mlp
from ..options import Option, int_tuple, optional
from ..potentials import Potentials
from . import terms
from .base import VAE, Encoded, Proposal
from .categorical import parse_latent
from .objective import EncoderParams
from .supervision import RowLoss, Supervision, check_labels

__all__ = ["SemiSupervisedVAE", "parse_semisup_latent"]

_CONT = re.compile(r"^(.*?)(?:\+(\d+))?\s*$")
DEFAULT_CONT_DIM = 5
# Not the reference code's 30: on MNIST with 100 labels a 30-dim per-class Gaussian let every
# class row draw any digit, and test accuracy fell to 61% (validation accuracy falling while
# the bound improved); with 5 dims it reached 93.9% (docs/semisupervised.md). Chosen on the
# validation split.
DEFAULT_ALPHA = 100.0  # = 1 / 0.01, the weight direct's label term puts on the cross-entropy


def parse_semisup_latent(spec: str | Sequence[int] | None) -> tuple[int, int]:
    """``"1xK"`` or ``"1xK+d"`` -> ``(K, d)``: one K-way class and a d-dim Gaussian (default 5)."""
    if spec is None:
        return 10, DEFAULT_CONT_DIM
    if isinstance(spec, str):
        m = _CONT.match(spec)
        disc, cont = m.group(1), m.group(2)
        n, k = parse_latent(disc)
        d = DEFAULT_CONT_DIM if cont is None else int(cont)
    else:
        n, k = parse_latent(spec)
        d = DEFAULT_CONT_DIM
    if n != 1:
        raise ValueError(
            f"semisupervised latent {spec!r}: one categorical (class) variable is supported, "
            "use 1xK or 1xK+d (e.g. 1x10+30)"
        )
    if d < 1:
        raise ValueError(f"semisupervised latent {spec!r}: the Gaussian dimension must be >= 1")
    return k, d


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.2)


class SemiSupervisedVAE(EncoderParams, VAE):
    """M2-style VAE: a K-way class ``c`` and a ``d``-dim Gaussian ``z`` whose row depends on ``c``.

    Args:
        num_classes: K. cont_dim: d. input_dim: D (784).
        hidden: the shared trunk's widths (default the reference's (400, 200)); the decoder
            mirrors them: ``K·d → 200 → 400 → D``.
        class_hidden: the class head's hidden width (200-100-K).
        alpha: weight of the labelled rows' cross-entropy for estimators that do not take
            ``labels=`` (Gumbel-softmax …); direct's label term has weight ``1 / label_eps``.

    Same interface as :class:`~structvae.models.CategoricalVAE` with ``uses_labels = True``
    (``objective(x, estimator, y=...)``, ``y = -1`` for unlabelled rows), plus
    :meth:`label_metrics` (per-row accuracy of the encoder's arg max) and
    :meth:`generation_grid` (rows: class, columns: a shared style code).
    """

    name = "semisupervised"
    options = (
        Option(
            "alpha",
            optional(float),
            None,
            f"weight of the labelled cross-entropy without supports_labels ({DEFAULT_ALPHA})",
        ),
        Option("hidden", int_tuple, (400, 200), "widths of the shared trunk"),
        Option("class_hidden", int, 100, "hidden width of the class head"),
    )
    uses_labels = True

    def __init__(
        self,
        num_classes: int = 10,
        cont_dim: int = DEFAULT_CONT_DIM,
        input_dim: int = 784,
        hidden: Sequence[int] = (400, 200),
        class_hidden: int = 100,
        alpha: float | None = None,
        activation: Callable[[], nn.Module] = _leaky,
    ) -> None:
        super().__init__()
        self.num_classes, self.cont_dim = int(num_classes), int(cont_dim)
        self.input_dim = int(input_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        K, d = self.num_classes, self.cont_dim
        self.encoder = mlp([self.input_dim, *self.hidden], activation, final_activation=activation)
        self.class_head = mlp([self.hidden[-1], int(class_hidden), K], activation)
        self.gauss_head = nn.Linear(self.hidden[-1], K * 2 * d)
        self.decoder = mlp([K * d, *reversed(self.hidden), self.input_dim], activation)

    @classmethod
    def from_spec(cls, latent: str | None = "1x10", **kw) -> SemiSupervisedVAE:
        """Build from ``"1xK"`` / ``"1xK+d"`` (K classes, d Gaussian dimensions, default 5)."""
        K, d = parse_semisup_latent(latent)
        return cls(num_classes=K, cont_dim=d, **kw)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """``(1, K)``: one K-way class variable."""
        return 1, self.num_classes

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, cont_dim={self.cont_dim}, alpha={self.alpha}"

    # ------------------------------------------------------------ the model
    def heads(self, x: torch.Tensor) -> tuple[Potentials, torch.Tensor, torch.Tensor]:
        """``x [B, D]`` -> (class potentials ``[B, 1, K]``, μ ``[B, K, d]``, log σ² ``[B, K, d]``)."""
        h = self.encoder(x.flatten(1).to(self._dtype))
        theta = self.class_head(h).view(-1, 1, self.num_classes)
        stats = self.gauss_head(h).view(-1, self.num_classes, 2, self.cont_dim)
        return Potentials(theta), stats[:, :, 0], stats[:, :, 1].clamp(-10.0, 10.0)

    def encode(self, x: torch.Tensor) -> Potentials:
        """``x [B, D]`` -> the class potentials ``[B, 1, K]``."""
        return self.heads(x)[0]

    def decode(self, w: torch.Tensor, z_cont: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``[..., D]`` of the block code ``w ⊗ z``.

        ``w [..., K]`` class weights (one-hot, or relaxed); ``z_cont [..., K, d]`` the Gaussian
        code of every class row (broadcast against ``w``'s leading dims).
        """
        code = (w[..., None] * z_cont.to(w.dtype)).flatten(-2)
        return self.decoder(code.to(self._dtype))

    @staticmethod
    def gauss_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(μ, σ²) || N(0, I))`` per class row: ``[B, K, d] -> [B, K]``."""
        return terms.gaussian_kl(mu, logvar)

    def _reparam(self, mu, logvar, generator=None) -> torch.Tensor:
        e = torch.randn(
            (mu.shape[0], 1, mu.shape[2]), device=mu.device, dtype=mu.dtype, generator=generator
        )
        return mu + (0.5 * logvar).exp() * e  # [B, K, d]: the same noise for every class row

    # ------------------------------------------------------------ the base's hooks
    def encode_all(self, x: torch.Tensor) -> Encoded:
        """Class potentials ``[B, 1, K]`` and the Gaussian code ``(μ, log σ²)`` ``[B, K, d]``."""
        potentials, mu, logvar = self.heads(x)
        return Encoded(potentials, (mu, logvar))

    @property
    def label_weight(self) -> float:
        """:attr:`alpha`: the labelled rows' cross-entropy weight for label-free estimators."""
        return self.alpha

    def _row_loss(self, x: torch.Tensor, z_cont: torch.Tensor, kl_table: torch.Tensor) -> RowLoss:
        """``loss(z [b, C, 1, K], rows) -> [b, C]``: BCE + Gaussian KL of each candidate class,
        with the Gaussian code ``z_cont [B, K, d]`` and its KL per class ``kl_table [B, K]``."""
        x = x.flatten(1).to(self._dtype)

        def fn(z: torch.Tensor, rows=None) -> torch.Tensor:
            sel = slice(None) if rows is None else rows
            w = z[:, :, 0, :]  # [b, C, K]
            bce = terms.bernoulli_nll(self.decode(w, z_cont[sel, None]), x[sel, None])
            return bce + (w * kl_table[sel, None].to(w.dtype)).sum(-1)

        return fn

    def training_loss(self, x: torch.Tensor, enc: Encoded | None, generator=None) -> RowLoss:
        """The estimators' loss of a class candidate, ``L(c) = BCE(c) + KL(N(μ_c, σ_c²) || N(0,
        I))``, at one fresh Gaussian draw (the same noise for every class row)."""
        enc = self.encode_all(x) if enc is None else enc
        mu, logvar = enc.code
        return self._row_loss(x, self._reparam(mu, logvar, generator), self.gauss_kl(mu, logvar))

    def _loss_fn(self, x, z_cont, kl_table, y=None):
        """``z [B, C, 1, K] -> [B, C]``: :meth:`_row_loss` with ``y``'s class instead on labelled
        rows (:mod:`~structvae.models.supervision`, rule 1)."""
        labels = None if y is None else check_labels(y, x.shape[0], self.latent_shape, y.device)
        labelled = None if labels is None else (labels >= 0).all(1)
        sup = Supervision(labels, labelled, False, self.alpha)
        return sup.loss(self._row_loss(x, z_cont, kl_table), self.num_classes)

    def loss_fn(self, x: torch.Tensor, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The estimators' loss ``z [B, C, 1, K] -> [B, C]`` with one fresh Gaussian draw."""
        fn = self.training_loss(x, None, generator)
        return lambda z: fn(z)

    def kl(self, potentials: Potentials, y: torch.Tensor | None = None) -> torch.Tensor:
        """``KL(q(c|x) || uniform) = log K − H(q)`` ``[B]``; ``log K`` (constant) on labelled rows."""
        kl = terms.categorical_kl(potentials.unary)
        if y is not None:
            kl = torch.where(y >= 0, torch.full_like(kl, math.log(self.num_classes)), kl)
        return kl

    def kl_in_loss(self, enc: Encoded, z: torch.Tensor) -> torch.Tensor:
        """The Gaussian KL at each row's class ``z [B, 1]`` (part of :meth:`training_loss`)."""
        mu, logvar = enc.code
        return self.gauss_kl(mu, logvar).gather(1, z[:, :1])[:, 0]

    def recon_and_kl(self, x, enc: Encoded, z: torch.Tensor, generator=None):
        """BCE at class ``z [B, 1]`` and one Gaussian draw; class KL + that class's Gaussian KL."""
        mu, logvar = enc.code
        c = z[:, 0]
        z_cont = self._reparam(mu, logvar, generator)
        recon = terms.bernoulli_nll(self.decode(self._one_hot(c), z_cont), self.flat_input(x))
        return recon, self.kl(enc.potentials) + self.kl_in_loss(enc, z)

    def proposal(self, enc: Encoded, samples: int, generator=None) -> Proposal:
        """``q(c|x) q(z|x, c)``: a class by Gumbel-max, then its Gaussian row; prior
        ``p(c) N(z; 0, I)`` with ``p(c) = 1/K``."""
        potentials, (mu, logvar) = enc.potentials, enc.code
        c = terms.gumbel_max(potentials.unary, samples, generator)[..., 0]  # [B, S]
        idx = c[..., None].expand(*c.shape, self.cont_dim)
        m, lv = mu.gather(1, idx), logvar.gather(1, idx)  # [B, S, d]
        e = torch.randn(m.shape, device=m.device, dtype=m.dtype, generator=generator)
        z = m + (0.5 * lv).exp() * e
        logq_c = torch.log_softmax(potentials.unary[:, 0].float(), -1).gather(1, c)
        log_q = logq_c + terms.diagonal_normal_log_prob(e, lv)
        log_prior = terms.standard_normal_log_prob(z) - math.log(self.num_classes)
        return Proposal(c[..., None], log_q, log_prior, z)

    def log_likelihood(self, x, enc: Encoded, prop: Proposal, generator=None) -> torch.Tensor:
        """``log p(x | c_s, z_s)`` ``[B, S]`` through the block code ``onehot(c) ⊗ z``."""
        code = self._one_hot(prop.z[..., 0])[..., None] * prop.code[:, :, None, :]  # [B, S, K, d]
        logits = self.decoder(code.flatten(-2))
        return -terms.bernoulli_nll(logits, self.flat_input(x)[:, None])

    # --------------------------------------------------------- evaluation
    def _sample_class(self, potentials: Potentials, samples: int, generator=None) -> torch.Tensor:
        return terms.gumbel_max(potentials.unary, samples, generator)[..., 0]  # [B, S]

    def _one_hot(self, c: torch.Tensor) -> torch.Tensor:
        return F.one_hot(c, self.num_classes).to(self._dtype)

    def _prior_code(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of classes ``c [N]`` with Gaussian codes ``z [N, d]``."""
        zk = z[:, None].expand(-1, self.num_classes, -1)
        return torch.sigmoid(self.decode(self._one_hot(c), zk))

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images ``[num, D]``: c uniform, z ~ N(0, I)."""
        dev = self._device
        c = torch.randint(self.num_classes, (int(num),), device=dev, generator=generator)
        z = torch.randn(
            (int(num), self.cont_dim), device=dev, dtype=self._dtype, generator=generator
        )
        return self._prior_code(c, z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``[B, D]`` from the encoder's arg max class and its mean code."""
        potentials, mu, _ = self.heads(x)
        return torch.sigmoid(self.decode(self._one_hot(potentials.unary[:, 0].argmax(-1)), mu))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's arg max class, long ``[B]`` (no noise)."""
        return self.encode(x).unary[:, 0].argmax(-1)

    @torch.no_grad()
    def label_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row metrics the trainer averages over a split: ``{"accuracy": [B]}`` (0/1)."""
        return {"accuracy": (self.classify(x) == y.to(x.device)).float()}

    @torch.no_grad()
    def generation_grid(
        self, n_styles: int = 10, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images ``[K·n_styles, D]``, row-major: row = class, column = one style z ~ N(0, I)
        shared down the column (``save_image(..., nrow=n_styles)`` lays it out)."""
        dev = self._device
        z = torch.randn(
            (int(n_styles), self.cont_dim), device=dev, dtype=self._dtype, generator=generator
        )
        c = torch.arange(self.num_classes, device=dev).repeat_interleave(int(n_styles))
        return self._prior_code(c, z.repeat(self.num_classes, 1))

    def grids(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """``{"generation_grid": (images [K·10, C, H, W], 10)}``: :meth:`generation_grid` with
        ten styles (rows: class, columns: a shared style code)."""
        n_styles = 10
        images = self.generation_grid(n_styles, generator=generator)
        return {"generation_grid": (images.reshape(-1, *self.image_shape), n_styles)}
