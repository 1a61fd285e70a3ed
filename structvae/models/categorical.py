"""The paper's categorical VAE: N independent categorical latents with K categories each."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..nn import mlp
from ..options import Option, int_tuple
from ..potentials import Potentials
from . import terms
from .base import VAE
from .objective import EncoderParams

__all__ = ["CategoricalVAE", "parse_latent"]

_LATENT = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_latent(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"NxK"`` (or ``(N, K)``) -> ``(N, K)``: N categorical variables with K categories each."""
    if isinstance(spec, str):
        m = _LATENT.match(spec)
        if m is None:
            raise ValueError(
                f"latent spec {spec!r} is not of the form NxK (N variables x K categories, "
                "e.g. 1x10 or 20x2)"
            )
        n, k = int(m.group(1)), int(m.group(2))
    else:
        try:
            n, k = (int(v) for v in spec)
        except (TypeError, ValueError):
            raise ValueError(f"latent spec must be 'NxK' or a pair (N, K), got {spec!r}") from None
    if n < 1 or k < 2:
        raise ValueError(f"latent spec {spec!r}: need N >= 1 variables and K >= 2 categories")
    return n, k


class CategoricalVAE(EncoderParams, VAE):
    """``N`` categorical latents × ``K`` categories with MLP encoder and decoder.

    Encoder ``input_dim → hidden… → N·K`` (the unary potentials, i.e. the logits of
    ``q(z|x) = Π_i softmax(θ_i)``), decoder ``N·K → reversed(hidden)… → input_dim`` (Bernoulli
    logits); the paper's default is ``hidden=(300,)``, ReLU. The prior is uniform.

    The interface is :class:`~structvae.models.base.VAE`'s; this class gives its hooks:
    :meth:`encode` ``x [B, D] -> Potentials``, :meth:`decode` ``z [..., N, K] -> logits [..., D]``
    and :meth:`kl` ``(potentials) -> [B]``. :meth:`loss_fn` ``(x) -> (z [B, C, N, K] -> [B, C])``
    is the estimators' loss, −log p(x|z); ``objective``, ``one_sample_loss`` (the paper's test
    loss: BCE at one hard sample z ~ q plus KL), ``iwae_nll`` and ``model(x)`` come from the base.
    """

    name = "categorical"
    options = (Option("hidden", int_tuple, (300,), "hidden widths of the encoder MLP"),)
    uses_labels = False
    kl_kind = "exact"  # the analytic KL of the factorised categorical posterior
    loss_is_bound = True  # one_sample_loss estimates the negative ELBO

    def __init__(
        self,
        num_latents: int = 1,
        num_categories: int = 10,
        hidden: Sequence[int] = (300,),
        input_dim: int = 784,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.num_latents, self.num_categories = parse_latent((num_latents, num_categories))
        self.hidden = tuple(int(h) for h in hidden)
        self.input_dim = int(input_dim)
        nk = self.num_latents * self.num_categories
        self.encoder = mlp([self.input_dim, *self.hidden, nk], activation)
        self.decoder = mlp([nk, *reversed(self.hidden), self.input_dim], activation)

    @classmethod
    def from_spec(cls, latent: str | Sequence[int] = "1x10", **kw) -> CategoricalVAE:
        """Build from a latent spec ``"NxK"``."""
        n, k = parse_latent(latent)
        return cls(num_latents=n, num_categories=k, **kw)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.num_latents, self.num_categories

    def extra_repr(self) -> str:
        return f"latent={self.num_latents}x{self.num_categories}, hidden={self.hidden}"

    # ------------------------------------------------------------ the model
    def encode(self, x: torch.Tensor) -> Potentials:
        """``x [B, D]`` -> unary potentials ``[B, N, K]`` (logits of q), no edges."""
        logits = self.encoder(x.flatten(1).to(self._dtype))
        return Potentials(logits.view(-1, self.num_latents, self.num_categories))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` float ``[..., N, K]`` (one-hot or relaxed) -> Bernoulli logits ``[..., D]``."""
        lead = z.shape[:-2]
        out = self.decoder(z.reshape(-1, self.num_latents * self.num_categories).to(self._dtype))
        return out.reshape(*lead, self.input_dim)

    def loss_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The reconstruction loss −log p(x|z) for candidates: ``z [B, C, N, K] -> [B, C]``.

        BCE with logits summed over pixels; the ``B·C`` candidates go through the decoder in
        one batched call, ``x`` broadcast as ``x[:, None]``.
        """
        return self.training_loss(x, None)

    def log_q(self, potentials: Potentials) -> torch.Tensor:
        """``log softmax(unary)`` ``[B, N, K]``."""
        return torch.log_softmax(potentials.unary, dim=-1)

    def kl(self, potentials: Potentials) -> torch.Tensor:
        """``KL(q || uniform) = N·log K − H(q)`` ``[B]``, analytic, differentiable.

        The trainer adds it (with its gradient) to every estimator's surrogate, so the
        objective is the negative ELBO whatever the estimator. The paper's public code computes
        this KL for direct optimization but does not train through it; we train it for all
        estimators, which makes the comparison one of gradient estimators of the same objective.
        """
        return terms.categorical_kl(potentials.unary)

    # --------------------------------------------------------- evaluation
    def _sample_q(self, potentials: Potentials, samples: int, generator=None) -> torch.Tensor:
        """``samples`` draws of z ~ q per data point: long ``[B, S, N]`` (Gumbel-max)."""
        return terms.gumbel_max(potentials.unary, samples, generator)

    def _one_hot(self, z: torch.Tensor) -> torch.Tensor:
        return self.one_hot(z)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images from the model: z from the uniform prior, pixel probabilities ``[num, D]``."""
        dev = self._device
        z = torch.randint(
            self.num_categories, (int(num), self.num_latents), device=dev, generator=generator
        )
        return torch.sigmoid(self.decode(self._one_hot(z)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``[B, D]`` decoded from the encoder's arg max."""
        z = self.encode(x).unary.argmax(-1)
        return torch.sigmoid(self.decode(self._one_hot(z)))
