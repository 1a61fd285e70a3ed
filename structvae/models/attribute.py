"""The attribute VAE: binary attribute bits (optionally coupled) plus a Gaussian style code.

One model for any image shape: the encoder maps an image to (a) potentials over ``A`` binary
attributes — unary scores θ_a and, with ``pairwise="supermodular" | "general"``, couplings θ_ab
on a graph of the attributes — and (b) the mean and log-variance of a Gaussian style code ``s``.
The decoder maps ``[one-hot bits, s]`` to Bernoulli logits of the pixels. Networks by image
shape: an MLP pair (784-300-300) for 28×28 grey digits (``--dataset morpho-mnist``), the
convolutional pair of :mod:`structvae.models.celeba` for 64×64 colour faces (``--dataset celeba``).

Learning, per batch (labels ``y`` long ``[B, A]``, -1 where unlabelled):

- the estimator's loss is the reconstruction ``−log p(x | z, s)`` at a reparameterised style
  sample, with labelled rows decoded at their label (the supervision rule); the KL is the
  attributes' (to the uniform prior) plus ``style_kl ×`` the Gaussian's (to N(0, I));
- **cycle consistency** (weight ``cycle``): every row's bits (its label, else the sample z*) with
  one attribute, chosen at random, switched are decoded at the row's style, the decoded pixel
  probabilities are re-encoded by a frozen copy of the encoder, and the cross-entropy of its
  attribute scores against the switched bits is added. Without it the decoder ignores the bits
  and the style code carries the attributes (docs/celeba.md, "What made the bits work"); the
  frozen encoder is trained on data only, so the term asks the decoder (and the style code) to
  make a switched bit visible as the attribute and to leave the other attributes alone.

The priors are uniform on ``{0, 1}^A`` and N(0, I). With couplings the KL is the Gibbs KL
(see :mod:`structvae.models.structured` for what is, and is not, a bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..data.celeba import CELEBA_IMAGE_SHAPE, parse_attributes
from ..morpho import MORPHO_ATTRIBUTES, parse_morpho_attributes
from ..nn import mlp
from ..options import Option
from ..potentials import Potentials
from ..solvers import Solver
from ..solvers.exact import all_assignments
from . import terms
from .base import VAE, Encoded, Proposal, image_shape_of
from .conv import conv_decoder, conv_encoder, parse_style_latent
from .objective import EncoderParams
from .pairwise import EXACT_KL_MAX_VARS, PairwiseBinaryLatents
from .supervision import RowLoss, supervise

__all__ = ["AttributeVAE", "CODES", "DEFAULT_CYCLE", "DEFAULT_STYLE_DIM"]

DEFAULT_CYCLE = 4.0
DEFAULT_STYLE_DIM = 4
DEFAULT_STYLE_KL = 2.0
DEFAULT_ALPHA = 100.0
_DIGIT_SHAPE = (1, 28, 28)
_MAX_COMBINATION_ATTRIBUTES = 6
CODES = ("block", "concat")


def _morpho_names(attributes) -> bool:
    """Whether ``attributes`` (given) are all Morpho-MNIST attribute names."""
    if attributes is None:
        return False
    try:
        parse_morpho_attributes(attributes)
    except ValueError:
        return False
    return True


def _positive(value) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"expected a non-negative number, got {value!r}")
    return v


class AttributeVAE(PairwiseBinaryLatents, EncoderParams, VAE):
    """``A`` binary attribute latents and a Gaussian style code (module docstring).

    Args:
        attributes: the attribute names, comma-separated or a sequence. 28×28 grey images:
            the Morpho-MNIST attributes (``small,slant,thick``, the default); 64×64 colour:
            CelebA's 40 (``Eyeglasses,Smiling,Male`` by default; ``all``). An unknown name is
            a ``ValueError`` listing the valid ones.
        style_dim: size of the Gaussian style code (``--latent``; default 4).
        pairwise, graph, solver: the couplings between the attributes (``none``: independent
            bits; ``supermodular``: softplus couplings, graph cut; ``general``: exact / ilp).
        cycle: weight of the cycle-consistency term (0 turns it off).
        style_kl: weight of the style code's KL (default 2; 1: the ELBO).
        alpha: weight of the labelled rows' cross-entropy for estimators without label support.
        channels, hidden: network widths (conv: c, 2c, 4c, 8c; hidden: the MLP / FC width).
        code: the decoder's input, ``"concat"`` ``[one-hot bits, s]`` (default) or ``"block"``
            ``[one-hot bits, bits ⊗ s]`` (the paper's mixed code: the style in the slot of each
            attribute's value).
        input_dim: 784 (1×28×28) or 12288 (3×64×64), from the dataset; default 784 when
            ``attributes`` are Morpho-MNIST names, else 12288 (the CelebA model's default).
    """

    name = "attribute"
    options = (
        Option("attributes", str, None, "attribute names (comma-separated)"),
        Option("pairwise", str, "none", "the coupling family", ("supermodular", "general", "none")),
        Option("graph", str, "complete", "the attribute graph of the couplings"),
        Option("cycle", _positive, DEFAULT_CYCLE, "weight of the cycle-consistency term"),
        Option("style_kl", _positive, DEFAULT_STYLE_KL, "weight of the style code's KL"),
        Option("alpha", _positive, DEFAULT_ALPHA, "label cross-entropy weight (no label support)"),
        Option("code", str, "concat", "the decoder's input: [bits, style] or bits x style", CODES),
        Option("channels", int, 32, "convolution width c (64x64 images)"),
        Option("hidden", int, None, "hidden width (default 300 for 28x28, 256 for 64x64)"),
    )
    uses_labels = True
    structure_label = "the attribute model's attributes"

    def __init__(
        self,
        attributes: str | Sequence[str] | None = None,
        style_dim: int = DEFAULT_STYLE_DIM,
        pairwise: str = "none",
        graph: str | nx.Graph | torch.Tensor | None = "complete",
        solver: str | Solver | None = None,
        cycle: float = DEFAULT_CYCLE,
        style_kl: float = DEFAULT_STYLE_KL,
        alpha: float = DEFAULT_ALPHA,
        channels: int = 32,
        hidden: int | None = None,
        code: str = "concat",
        exact_kl_max_vars: int = EXACT_KL_MAX_VARS,
        input_dim: int | None = None,
    ) -> None:
        super().__init__()
        if input_dim is None:
            input_dim = 784 if _morpho_names(attributes) else math.prod(CELEBA_IMAGE_SHAPE)
        shape = image_shape_of(int(input_dim))
        if shape not in (_DIGIT_SHAPE, CELEBA_IMAGE_SHAPE):
            raise ValueError(
                f"the attribute model takes 28x28 grey images (input_dim 784, e.g. --dataset "
                f"morpho-mnist) or 64x64 colour ones (12288, --dataset celeba); got {input_dim}"
            )
        self.shape = shape
        digits = shape == _DIGIT_SHAPE
        self.attributes = (
            parse_morpho_attributes(attributes) if digits else parse_attributes(attributes)
        )
        A = len(self.attributes)
        self._init_pairwise(A, pairwise, graph, solver, exact_kl_max_vars)
        self.style_dim = parse_style_latent(style_dim)
        self.cycle, self.style_kl_weight, self.alpha = map(_positive, (cycle, style_kl, alpha))
        self.input_dim = int(input_dim)
        self.hidden = int(hidden if hidden is not None else (300 if digits else 256))
        self.channels = int(channels)
        if self.hidden < 1 or self.channels < 1:
            raise ValueError(f"hidden and channels must be positive, got {hidden}, {channels}")
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}")
        self.code = code
        code_dim = 2 * A + (2 * A if code == "block" else 1) * self.style_dim
        if digits:
            self.encoder = mlp([784, self.hidden, self.hidden])
            self.encoder.append(nn.ReLU())
            self.decoder = mlp([code_dim, self.hidden, self.hidden, 784])
        else:
            self.encoder = conv_encoder(self.channels, self.hidden)
            self.decoder = conv_decoder(code_dim, self.channels, self.hidden)
        self.attribute_head = nn.Linear(self.hidden, A + self.num_edges)
        self.style_head = nn.Linear(self.hidden, 2 * self.style_dim)

    @classmethod
    def from_spec(cls, latent: int | str | None = None, **kw) -> AttributeVAE:
        """Build from a latent spec: the style-code size (default 4); attributes in ``kw``."""
        return cls(style_dim=DEFAULT_STYLE_DIM if latent is None else latent, **kw)

    def extra_repr(self) -> str:
        return (
            f"attributes={','.join(self.attributes)}, style_dim={self.style_dim}, "
            f"pairwise={self.pairwise!r} ({self.num_edges} edges), solver={self.solver.name!r}, "
            f"cycle={self.cycle}, style_kl={self.style_kl_weight}, image={self.shape}"
        )

    def attribute_index(self, attribute: str | int) -> int:
        """The column of ``attribute`` (a name, case forgiven, or an index); ``ValueError``
        listing the model's attributes otherwise."""
        if isinstance(attribute, int) and not isinstance(attribute, bool):
            if 0 <= attribute < len(self.attributes):
                return attribute
        else:
            lookup = {a.lower(): i for i, a in enumerate(self.attributes)}
            if str(attribute).strip().lower() in lookup:
                return lookup[str(attribute).strip().lower()]
        raise ValueError(
            f"unknown attribute {attribute!r}; this model's attributes are: "
            f"{', '.join(self.attributes)}"
        )

    # ------------------------------------------------------------ the networks
    @property
    def label_weight(self) -> float:
        """:attr:`alpha`, the labelled rows' cross-entropy weight for label-free estimators."""
        return self.alpha

    def _heads(self, h: torch.Tensor, params: dict | None = None):
        """``h [B, hidden]`` -> (unary scores ``[B, A]``, raw couplings ``[B, E]``, style mean
        and log-variance ``[B, S]``); ``params``: detached weights (the frozen encoder)."""
        if params is None:
            out, st = self.attribute_head(h), self.style_head(h)
        else:
            out = functional_call(self.attribute_head, params["attribute_head"], (h,))
            st = functional_call(self.style_head, params["style_head"], (h,))
        A = self.num_latents
        mu, logvar = st.chunk(2, dim=-1)
        return out[:, :A], out[:, A:], mu, logvar.clamp(-20.0, 10.0)

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._dtype)
        return x.reshape(-1, 784) if self.shape == _DIGIT_SHAPE else x.reshape(-1, *self.shape)

    def encode_all(self, x: torch.Tensor) -> Encoded:
        """``x [B, D]`` -> attribute potentials ``[B, A, 2]`` and the style code
        ``(μ, log σ²)`` ``[B, S]`` each."""
        theta, raw, mu, logvar = self._heads(self.encoder(self._net_input(x)))
        return Encoded(self.binary_potentials(theta, raw), (mu, logvar))

    def encode(self, x: torch.Tensor) -> Potentials:
        """``x`` -> the attribute potentials (binary form, the module's edges)."""
        return self.encode_all(x).potentials

    def decode(self, z: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` float ``[..., A, 2]`` (one-hot) and ``style [..., S]`` (default 0) -> Bernoulli
        logits ``[..., D]``."""
        lead = z.shape[:-2]
        if style is None:
            style = z.new_zeros(*lead, self.style_dim)
        style = style.to(z.dtype).expand(*lead, self.style_dim)
        if self.code == "block":
            style = (z[..., None] * style[..., None, None, :]).flatten(-3)  # [..., 2A·S]
        code = torch.cat([z.reshape(*lead, z.shape[-2] * z.shape[-1]), style], -1)
        out = self.decoder(code.reshape(-1, code.shape[-1]).to(self._dtype))
        return out.reshape(*lead, self.input_dim)

    def _style_sample(self, mu, logvar, samples: int | None = None, generator=None):
        """Reparameterised ``(mu + σ·e, e)``: ``[B, S]``, or ``[B, samples, S]``."""
        shape = mu.shape if samples is None else (mu.shape[0], samples, mu.shape[1])
        e = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
        if samples is not None:
            mu, logvar = mu[:, None], logvar[:, None]
        return mu + (0.5 * logvar).exp() * e, e

    # ------------------------------------------------------------ the base's hooks
    def training_loss(self, x: torch.Tensor, enc: Encoded | None, generator=None) -> RowLoss:
        """``loss(z [b, C, A, 2], rows=None) -> [b, C]``: pixel BCE at one fresh style draw
        (kept in ``enc.cache["style"]`` for the cycle term)."""
        enc = self.encode_all(x) if enc is None else enc
        style, _ = self._style_sample(*enc.code, generator=generator)
        enc.cache["style"] = style
        target = self.flat_input(x)

        def fn(z: torch.Tensor, rows=None) -> torch.Tensor:
            t, s = (target, style) if rows is None else (target[rows], style[rows])
            return terms.bernoulli_nll(self.decode(z, s[:, None]), t[:, None])

        return fn

    @staticmethod
    def style_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(mu, exp logvar) || N(0, I))`` ``[B]``, closed form."""
        return terms.gaussian_kl(mu, logvar)

    def continuous_kl(self, enc: Encoded) -> torch.Tensor:
        """``style_kl × KL(N(μ, σ²) || N(0, I))`` ``[B]`` (the ELBO's at ``style_kl = 1``)."""
        kl = terms.gaussian_kl(*enc.code)
        return kl if self.style_kl_weight == 1.0 else self.style_kl_weight * kl

    def proposal(self, enc: Encoded, samples: int, generator=None) -> Proposal:
        """The bits' proposal (:class:`PairwiseBinaryLatents`: the Gibbs q, exact) times the
        Gaussian q(s|x); prior uniform × N(0, I)."""
        bits = super().proposal(enc, samples, generator)
        mu, logvar = (t.to(self.float_dtype) for t in enc.code)
        style, e = self._style_sample(mu, logvar, samples, generator)  # [B, S, d]
        log_q = bits.log_q + terms.diagonal_normal_log_prob(e, logvar[:, None])
        log_prior = bits.log_prior + terms.standard_normal_log_prob(style)
        return Proposal(bits.z, log_q, log_prior, style)

    def log_likelihood(self, x, enc: Encoded, prop: Proposal, generator=None) -> torch.Tensor:
        """``log p(x | z_s, s_s)`` ``[B, S]``."""
        logits = self.decode(self.one_hot(prop.z), prop.code.to(self.param_dtype))
        return -terms.bernoulli_nll(logits, self.flat_input(x)[:, None])

    # ------------------------------------------------------------ training
    def cycle_loss(self, z: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The cycle-consistency term ``[B]``: bits ``z`` long ``[B, A]`` with one random
        attribute per row switched, decoded at ``style [B, S]``, re-encoded by the frozen
        encoder; the binary cross-entropy of its attribute scores against the switched bits,
        summed over the attributes. Gradients reach the decoder and the style code only."""
        B, A = z.shape
        which = torch.randint(A, (B,), device=z.device)
        switched = z.clone()
        rows = torch.arange(B, device=z.device)
        switched[rows, which] = 1 - switched[rows, which]
        probs = torch.sigmoid(self.decode(self.one_hot(switched), style))
        frozen = {
            name: {k: v.detach() for k, v in getattr(self, name).named_parameters()}
            for name in ("encoder", "attribute_head", "style_head")
        }
        h = functional_call(self.encoder, frozen["encoder"], (self._net_input(probs),))
        theta = self._heads(h, frozen)[0]
        return F.binary_cross_entropy_with_logits(
            theta, switched.to(theta.dtype), reduction="none"
        ).sum(-1)

    def objective(
        self, x: torch.Tensor, estimator, y: torch.Tensor | None = None, kind: str = "elbo", **kw
    ) -> tuple[torch.Tensor, dict]:
        """The base's objective (labelled rows decoded at their label) plus ``cycle`` × the
        cycle term at the bits of each row (its label, else the encoder's arg max) and one
        style draw; statistic ``cycle`` is the mean term."""
        total, stats = super().objective(x, estimator, y, kind, **kw)
        if y is not None:
            stats["labelled"] = (
                (torch.as_tensor(y) >= 0).reshape(x.shape[0], -1).all(1).float().mean()
            )
        if self.cycle > 0:
            enc = self.encode_all(x)
            style, _ = self._style_sample(*enc.code)
            z = self.solver(enc.potentials.detach())
            if y is not None:
                sup = supervise(y, estimator, self.latent_shape, x.shape[0], 0.0, x.device)
                z = sup.effective(z)
            cyc = self.cycle_loss(z, style).mean()
            total = total + self.cycle * cyc
            stats["cycle"] = cyc.detach().float()
        return total, stats

    # --------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images from the priors (uniform bits, N(0, I) style): ``[num, D]``."""
        dev = self._device
        z = torch.randint(2, (int(num), self.num_latents), device=dev, generator=generator)
        s = torch.randn(int(num), self.style_dim, device=dev, generator=generator)
        return torch.sigmoid(self.decode(self.one_hot(z), s.to(self._dtype)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's noise-free arg max of the attribute potentials: long ``[B, A]``."""
        return self.solver(self.encode(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` decoded from the arg-max attributes and the style mean."""
        enc = self.encode_all(x)
        z = self.solver(enc.potentials)
        return torch.sigmoid(self.decode(self.one_hot(z), enc.code[0]))

    @torch.no_grad()
    def switch(self, x: torch.Tensor, attribute: str | int, on: bool) -> torch.Tensor:
        """``x`` decoded with ``attribute`` forced on (``on=True``) or off, the style code at the
        encoder's mean and the other bits at the encoder's arg max: pixel probabilities
        ``[B, C, H, W]``. An unknown attribute is a ``ValueError`` listing the valid ones."""
        j = self.attribute_index(attribute)
        enc = self.encode_all(x)
        z = self.solver(enc.potentials).clone()
        z[:, j] = int(bool(on))
        probs = torch.sigmoid(self.decode(self.one_hot(z), enc.code[0]))
        return probs.reshape(-1, *self.shape)

    @torch.no_grad()
    def label_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row metrics against ``y`` long ``[B, A]`` (-1: unlabelled), float ``[B]``:

        - ``accuracy`` (the fraction of the row's labelled attributes :meth:`predict` gets
          right) and ``acc_<attribute>`` (1/0; NaN where unlabelled);
        - for the Morpho-MNIST attributes, measured on the decoded images by
          :mod:`structvae.morphometrics` (on/off difference from this batch's labelled rows):
          ``switch_<attribute>`` (1 where forcing the bit on vs off moves the attribute's
          measurement by at least half the data's difference, in its direction) and
          ``kept_<attribute>`` (1 where every other measurement moves by less than half its)."""
        y = torch.as_tensor(y, device=x.device).long().reshape(x.shape[0], self.num_latents)
        labelled = y >= 0
        correct = (self.predict(x) == y).float()
        per = torch.where(labelled, correct, torch.full_like(correct, math.nan))
        acc = (correct * labelled).sum(1) / labelled.sum(1).clamp_min(1)
        out = {"accuracy": torch.where(labelled.any(1), acc, math.nan)}
        for a, name in enumerate(self.attributes):
            out[f"acc_{name}"] = per[:, a]
        if self.shape == _DIGIT_SHAPE and set(self.attributes) <= set(MORPHO_ATTRIBUTES):
            out.update(self._switch_metrics(x, y))
        return out

    def _switch_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``switch_<a>`` / ``kept_<a>`` per row (see :meth:`label_metrics`); NaN when the batch
        lacks labelled rows with an attribute on and off."""
        from ..morphometrics import measure, on_off_difference, switch_rows

        nan = torch.full((x.shape[0],), math.nan, device=x.device)
        try:
            d = on_off_difference(measure(x), y, self.attributes)
        except ValueError:
            return {f"{k}_{a}": nan for a in self.attributes for k in ("switch", "kept")}
        out = {}
        for a in self.attributes:
            on, off = self.switch(x, a, True), self.switch(x, a, False)
            success, kept = switch_rows(on, off, a, d)
            out[f"switch_{a}"] = torch.as_tensor(success, dtype=torch.float32, device=x.device)
            out[f"kept_{a}"] = torch.as_tensor(kept, dtype=torch.float32, device=x.device)
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

        Rows: the images ``x`` (style at the encoder's mean, bits at its arg max; the first two
        columns are *input* and *reconstruction*) or, without ``x``, ``num`` style codes from
        N(0, I) with uniform bits (first column *sample*). Then every attribute off and on with
        the others as in the base bits; with ``combinations=True`` instead every one of the
        ``2^A`` settings (``A <= 6``). Returns pixel probabilities ``[rows, columns, C, H, W]``
        and a title per column."""
        dev = self._device
        if x is not None:
            enc = self.encode_all(x.to(dev))
            base, style = self.solver(enc.potentials), enc.code[0]
            first = ["input", "reconstruction"]
        else:
            style = torch.randn(int(num), self.style_dim, device=dev, generator=generator)
            base = torch.randint(2, (int(num), self.num_latents), device=dev, generator=generator)
            first = ["sample"]
        settings, titles = self._grid_settings(base, combinations)
        if not combinations:
            settings = torch.cat([base[:, None], settings], 1)
            titles = first[-1:] + titles
        probs = torch.sigmoid(self.decode(self.one_hot(settings), style[:, None].to(self._dtype)))
        R = base.shape[0]
        if x is not None and not combinations:
            probs = torch.cat([x.reshape(R, 1, -1).to(probs), probs], 1)
            titles = first[:1] + titles
        return probs.reshape(R, -1, *self.shape), titles

    def _grid_settings(self, base: torch.Tensor, combinations: bool):
        """The bit settings ``[R, columns, A]`` of :meth:`attribute_grid` and their titles."""
        R, A = base.shape
        if combinations:
            if A > _MAX_COMBINATION_ATTRIBUTES:
                raise ValueError(
                    f"combinations=True draws 2^A columns; A = {A} is above "
                    f"{_MAX_COMBINATION_ATTRIBUTES}"
                )
            settings = all_assignments(A, 2, device=base.device)[None].expand(R, -1, -1)
            titles = [
                " ".join(
                    f"{n}{'+' if v else '-'}" for n, v in zip(self.attributes, row, strict=True)
                )
                for row in settings[0].tolist()
            ]
            return settings, titles
        switched = base[:, None, None, :].repeat(1, A, 2, 1)  # [R, A, 2, A]
        idx = torch.arange(A, device=base.device)
        switched[:, idx, :, idx] = torch.arange(2, device=base.device)
        titles = [f"{n} {s}" for n in self.attributes for s in ("off", "on")]
        return switched.reshape(R, 2 * A, A), titles

    def grids(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """``{"attribute_grid": (images [R·(2 + 2A), C, H, W], 2 + 2A)}``: :meth:`attribute_grid`
        of the first eight images of ``x``."""
        images, titles = self.attribute_grid(x[:8])
        return {"attribute_grid": (images.flatten(0, 1), len(titles))}
