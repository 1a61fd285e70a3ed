"""The paper's categorical VAE: N independent categorical latents with K categories each."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..estimators.base import Estimator
from ..gumbel import sample_gumbel
from ..options import Option, int_tuple
from ..potentials import Potentials
from .base import VAE, ModelOutput
from .mlp import mlp
from .objective import EncoderParams, elbo_objective

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

    The interface the training loop uses (every VAE in :mod:`structvae.models` has it):

    - :meth:`encode` ``x [B, D] -> Potentials``; :meth:`decode` ``z [..., N, K] -> logits [..., D]``;
    - :meth:`loss_fn` ``(x) -> (z [B, C, N, K] -> [B, C])``: the estimators' loss, −log p(x|z);
    - :meth:`kl` ``(potentials) -> [B]``;
    - :meth:`objective` ``(x, estimator, **kw) -> (scalar, stats)``: what the trainer
      back-propagates, and per-batch statistics (``loss``, ``recon``, ``kl``, …);
    - :meth:`one_sample_loss` ``(x, generator) -> {"loss", "recon", "kl"}`` each ``[B]``: the
      paper's test loss, BCE at one hard sample z ~ q plus KL — the same for every estimator;
    - :meth:`iwae_nll`, :meth:`sample`, :meth:`reconstruct`;
    - ``uses_labels``: whether :meth:`objective` wants the labels (``y=``).
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
        x = x.flatten(1).to(self._dtype)

        def fn(z: torch.Tensor) -> torch.Tensor:
            B, C = z.shape[:2]
            logits = self.decode(z)  # [B, C, D]
            target = x[:, None].expand(B, C, self.input_dim)
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

        return fn

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
        logq = self.log_q(potentials)
        neg_entropy = (logq.exp() * logq).sum((-1, -2))
        return neg_entropy + self.num_latents * math.log(self.num_categories)

    def objective(self, x: torch.Tensor, estimator: Estimator, **kw) -> tuple[torch.Tensor, dict]:
        """The scalar to back-propagate (estimator surrogate + mean KL) and batch statistics.

        Statistics: ``recon`` (mean loss at the estimator's sample), ``kl`` (mean),
        ``loss = recon + kl`` (the one-sample negative-ELBO estimate per data point, detached
        0-dim tensors), plus the estimator's float ``info`` entries (``eps``, ``temperature``).
        """
        return elbo_objective(self, x, estimator, **kw)

    # --------------------------------------------------------- evaluation
    def _sample_q(self, potentials: Potentials, samples: int, generator=None) -> torch.Tensor:
        """``samples`` draws of z ~ q per data point: long ``[B, S, N]`` (Gumbel-max)."""
        u = potentials.unary.detach()
        B, N, K = u.shape
        g = sample_gumbel((B, samples, N, K), device=u.device, dtype=u.dtype, generator=generator)
        return (u[:, None] + g).argmax(-1)

    def _one_hot(self, z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(z, self.num_categories).to(self._dtype)

    @torch.no_grad()
    def one_sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        """The paper's test loss per data point: BCE at one sample ``z ~ q`` plus the KL
        (``loss``, ``recon``, ``kl`` ``[B]``; ``z`` ``[B, N]``)."""
        potentials = self.encode(x)
        z = self._sample_q(potentials, 1, generator)
        recon = self.loss_fn(x)(self._one_hot(z))[:, 0]
        kl = self.kl(potentials)
        return ModelOutput(recon + kl, recon, kl, z[:, 0])

    @torch.no_grad()
    def iwae_nll(
        self,
        x: torch.Tensor,
        samples: int = 100,
        generator: torch.Generator | None = None,
        chunk_rows: int = 20000,
    ) -> torch.Tensor:
        """Importance-weighted estimate of −log p(x) ``[B]`` with q(z|x) as the proposal.

        ``−log (1/S) Σ_s p(x|z_s) p(z_s) / q(z_s|x)``, z_s ~ q, computed in chunks of about
        ``chunk_rows`` decoder rows. An upper bound on −log p(x) in expectation, tightening as
        ``samples`` grows.
        """
        samples = int(samples)
        if samples < 1:
            raise ValueError(f"iwae_nll needs samples >= 1, got {samples}")
        potentials = self.encode(x)
        ft = torch.promote_types(self._dtype, torch.float32)
        logq_table = self.log_q(potentials).to(ft)  # [B, N, K]
        B = x.shape[0]
        log_prior = -self.num_latents * math.log(self.num_categories)
        loss = self.loss_fn(x)
        step = max(1, int(chunk_rows) // max(B, 1))
        parts = []
        for start in range(0, samples, step):
            c = min(step, samples - start)
            z = self._sample_q(potentials, c, generator)  # [B, c, N]
            log_px = -loss(self._one_hot(z)).to(ft)  # [B, c]
            table = logq_table[:, None].expand(B, c, *logq_table.shape[1:])
            log_q = table.gather(-1, z[..., None]).squeeze(-1).sum(-1)  # [B, c]
            parts.append(log_px + log_prior - log_q)
        log_w = torch.cat(parts, dim=1)
        return -(torch.logsumexp(log_w, dim=1) - math.log(samples))

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
