"""The paper's structured binary VAE: n binary latents with unary and pairwise potentials.

The encoder maps ``x`` to ``h(z) = sum_i theta_i z_i + sum_(i,j) in E theta_ij z_i z_j``
(:meth:`structvae.Potentials.binary`), a sample is the perturb-max assignment
``z* = argmax_z h(z) + gamma(z)`` with Gumbel noise on the unary terms only, found by an
arg-max solver (graph cut for supermodular couplings), and the decoder is a Bernoulli MLP.

What is, and is not, a bound
----------------------------
Two distributions over ``z`` appear and they differ as soon as there are edges:

- the *perturb-max* distribution ``r(z|x)``: the law of ``z*``. This is what the estimators
  sample and differentiate, what :meth:`StructuredVAE.one_sample_loss` draws and what the
  decoder is trained on. Its probabilities and its KL are intractable.
- the *Gibbs* distribution ``q(z|x) ∝ exp h(z)``, whose KL to the uniform prior,
  ``KL(q || u) = E_q[h] − log Z + n log 2``, can be computed exactly for small ``n`` (by
  enumeration) or on forests (sum-product). :meth:`StructuredVAE.kl` returns it where it can
  (``kl_kind == "exact-gibbs"``), else the KL of the unary-only factorised Bernoulli
  distribution, the paper's approximation (``kl_kind == "factorised-approx"``).

Without edges ``r = q`` (Gumbel-max is exact), the KL is exact and the usual ELBO holds. With
edges, ``r ≠ q`` (Gumbel on unaries only does not sample the Gibbs distribution), and the
training / test "loss" ``E_r[−log p(x|z)] + KL(q || u)`` mixes the two: it is the negative ELBO
of neither distribution and is **not an upper bound on −log p(x)** — not even with the exact
Gibbs KL. (An ELBO with ``r`` would need ``KL(r || u)``, which is intractable.) It is the
paper's quantity, reported for comparison with it. The honest number is
:meth:`StructuredVAE.iwae_nll`: importance sampling with the Gibbs ``q`` as the proposal
(sampled and scored exactly by enumeration), an upper bound on −log p(x) in expectation;
with one sample its expectation is the Gibbs negative ELBO ``E_q[−log p(x|z)] + KL(q || u)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import networkx as nx
import torch
from torch import nn

from ..nn import mlp
from ..options import Option, int_tuple
from ..potentials import Potentials
from ..solvers import Solver
from .base import VAE
from .objective import EncoderParams
from .pairwise import (
    EXACT_KL_MAX_VARS,
    KL_CHOICES,
    PAIRWISE_FAMILIES,
    PairwiseBinaryLatents,
    graph_option,
)

__all__ = [
    "StructuredVAE",
    "parse_binary_latent",
    "PAIRWISE_FAMILIES",
    "KL_CHOICES",
    "EXACT_KL_MAX_VARS",
]

_LATENT = re.compile(r"^\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*$")


def parse_binary_latent(spec: int | str) -> int:
    """``15``, ``"15"`` or ``"15x2"`` -> 15 binary latents."""
    if isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, int):
        n, k = spec, 2
    else:
        m = _LATENT.match(str(spec))
        if m is None:
            raise ValueError(
                f"latent spec {spec!r} for the structured model must be N (N binary latents, "
                "e.g. 15) or Nx2"
            )
        n, k = int(m.group(1)), int(m.group(2) or 2)
    if k != 2:
        raise ValueError(
            f"latent spec {spec!r}: the structured model has binary latents (K = 2), got K = {k}"
        )
    if n < 1:
        raise ValueError(f"latent spec {spec!r}: need N >= 1 binary latents")
    return n


class StructuredVAE(PairwiseBinaryLatents, EncoderParams, VAE):
    """``n`` binary latents with unary and pairwise potentials (the paper's structured VAE).

    Encoder ``input_dim → hidden… → n + E`` (``n`` unary scores θ_i and ``E`` raw couplings, one
    per edge of ``graph``), decoder ``2n`` (one-hot z) ``→ reversed(hidden)… → input_dim``
    (Bernoulli logits, BCE summed over pixels). The prior is uniform on ``{0, 1}^n``.

    Args:
        num_latents: ``n`` (default 15, the paper's).
        pairwise: ``"supermodular"`` (θ_ij = softplus(raw) ≥ 0: graph cut is exact),
            ``"general"`` (θ_ij = raw, any sign) or ``"none"`` (no edges: the unstructured
            baseline, identical to a ``n x 2`` categorical VAE up to parametrisation).
        graph: ``"complete"`` (default), ``"chain"``, ``"grid"``, ``"tree"``, ``"none"``, a
            ``networkx.Graph`` on nodes ``0..n-1`` or an ``[E, 2]`` tensor.
        solver: arg-max solver (name or instance) for samples and reconstructions;
            ``None``: :attr:`default_solver`. Checked with :meth:`check_solver`.
        exact_kl_max_vars: enumerate the Gibbs distribution up to this ``n`` (non-forests).
        kl: which KL :meth:`kl` computes (trained and reported): ``"auto"`` (default: the
            exact Gibbs KL where it is tractable — no edges, a forest, or
            ``n ≤ exact_kl_max_vars`` — else the factorised approximation), ``"exact"`` (the
            exact Gibbs KL; a ``ValueError`` when it is intractable) or ``"factorised"``
            (always the unary-only approximation, the paper's choice: cheapest to train).
        hidden, input_dim, activation: the MLPs (paper: ``(300,)``, 784, ReLU).

    Attributes:
        kl_kind: ``"exact-gibbs"`` or ``"factorised-approx"``: what :meth:`kl` computes.
        solver: the :class:`~structvae.solvers.Solver` used by :meth:`one_sample_loss`,
            :meth:`reconstruct`, and by :meth:`objective` for an estimator without a solver.

    Read the module docstring: with edges, the one-sample loss is not a bound on −log p(x).
    """

    name = "structured"
    options = (
        Option("pairwise", str, "supermodular", "the coupling family", PAIRWISE_FAMILIES),
        graph_option("complete"),
        Option("kl", str, "auto", "which KL is trained and reported", KL_CHOICES),
        Option("exact_kl_max_vars", int, EXACT_KL_MAX_VARS, "enumerate the Gibbs KL up to n"),
        Option("hidden", int_tuple, (300,), "hidden widths of the encoder MLP"),
    )
    uses_labels = False

    def __init__(
        self,
        num_latents: int = 15,
        pairwise: str = "supermodular",
        graph: str | nx.Graph | torch.Tensor | None = "complete",
        solver: str | Solver | None = None,
        hidden: Sequence[int] = (300,),
        input_dim: int = 784,
        activation: Callable[[], nn.Module] = nn.ReLU,
        exact_kl_max_vars: int = EXACT_KL_MAX_VARS,
        kl: str = "auto",
    ) -> None:
        super().__init__()
        n = parse_binary_latent(int(num_latents))
        self._init_pairwise(n, pairwise, graph, solver, exact_kl_max_vars, kl)
        self.hidden = tuple(int(h) for h in hidden)
        self.input_dim = int(input_dim)
        self.encoder = mlp([self.input_dim, *self.hidden, n + self.num_edges], activation)
        self.decoder = mlp([2 * n, *reversed(self.hidden), self.input_dim], activation)

    @classmethod
    def from_spec(cls, latent: int | str = 15, **kw) -> StructuredVAE:
        """Build from a latent spec: ``15``, ``"15"`` or ``"15x2"`` binary latents."""
        return cls(num_latents=parse_binary_latent(latent), **kw)

    def extra_repr(self) -> str:
        return (
            f"latent={self.num_latents} binary, pairwise={self.pairwise!r}, "
            f"graph={self.graph_name!r} ({self.num_edges} edges), solver={self.solver.name!r}, "
            f"kl_kind={self.kl_kind!r}, hidden={self.hidden}"
        )

    # ------------------------------------------------------------ the model
    def encode(self, x: torch.Tensor) -> Potentials:
        """``x [B, D]`` -> binary-form potentials (K = 2, the module's edges and device)."""
        out = self.encoder(x.flatten(1).to(self._dtype))
        n = self.num_latents
        return self.binary_potentials(out[:, :n], out[:, n:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` float ``[..., n, 2]`` (one-hot or relaxed) -> Bernoulli logits ``[..., D]``."""
        lead = z.shape[:-2]
        out = self.decoder(z.reshape(-1, 2 * self.num_latents).to(self._dtype))
        return out.reshape(*lead, self.input_dim)

    def loss_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """−log p(x|z) for candidates ``z [B, C, n, 2] -> [B, C]`` (pixel-summed BCE)."""
        return self.training_loss(x, None)

    # ``objective`` (the estimator gets this model's solver when it has none, checked with
    # check_solver first), ``one_sample_loss`` (BCE at one perturb-max sample plus kl: not a
    # bound with edges) and ``iwae_nll`` (the Gibbs q as the proposal, sampled and scored
    # exactly: an upper bound in expectation) come from the base over the pairwise hooks.

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images: z from the uniform prior, pixel probabilities ``[num, D]``."""
        z = torch.randint(2, (int(num), self.num_latents), device=self._device, generator=generator)
        return torch.sigmoid(self.decode(self._one_hot(z)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``[B, D]`` decoded from the arg max of the unperturbed h."""
        z = self.solver(self.encode(x))
        return torch.sigmoid(self.decode(self._one_hot(z)))
