"""Binary latents with unary and pairwise potentials: the structure shared by the structured VAE
(:class:`~structvae.models.StructuredVAE`) and the CelebA attribute VAE.

A model mixes in :class:`PairwiseBinaryLatents` and calls :meth:`~PairwiseBinaryLatents.
_init_pairwise` from its ``__init__``. The mixin owns the graph (``edges``), the coupling family
(``pairwise``), the arg-max solver and its checks, the KL of the Gibbs distribution
``q(z) ∝ exp h(z)`` to the uniform prior and exact samples of q (see
:mod:`structvae.models.structured` for what is, and is not, a bound).
"""

from __future__ import annotations

import math

import networkx as nx
import torch
import torch.nn.functional as F

from ..gibbs import binary_gibbs_kl
from ..graphs import GRAPH_KINDS, is_forest, make_edges
from ..gumbel import sample_gumbel
from ..options import Option
from ..potentials import Potentials
from ..solvers import Solver, enumerate_scores, get_solver, tree_log_partition
from ..solvers.exact import all_assignments
from ..solvers.select import Structure, check_solver, default_solver_name, select
from . import terms
from .base import Encoded, Proposal

__all__ = [
    "PairwiseBinaryLatents",
    "PAIRWISE_FAMILIES",
    "KL_CHOICES",
    "EXACT_KL_MAX_VARS",
    "graph_option",
]

PAIRWISE_FAMILIES = ("supermodular", "general", "none")
KL_CHOICES = ("auto", "exact", "factorised")

EXACT_KL_MAX_VARS = 20
"""Up to this many latents (without a forest) the Gibbs KL is computed by enumeration."""


def graph_option(default: str) -> Option:
    """The ``graph`` option of models with pairwise couplings."""
    return Option("graph", str, default, "the graph of the couplings", tuple(GRAPH_KINDS))


class PairwiseBinaryLatents:
    """Mixin for an ``nn.Module`` with ``n`` binary latents, unary θ_i and pairwise θ_ij.

    Attributes set by :meth:`_init_pairwise`: ``num_latents``, ``pairwise``, ``edges`` (long
    ``[E, 2]`` buffer), ``graph_name``, ``exact_kl_max_vars``, ``kl_kind``
    (``"exact-gibbs"`` or ``"factorised-approx"``) and ``solver``. ``structure_label`` names
    the model in error messages.
    """

    structure_label = "the structured model"

    def _init_pairwise(
        self,
        num_latents: int,
        pairwise: str,
        graph: str | nx.Graph | torch.Tensor | None,
        solver: str | Solver | None,
        exact_kl_max_vars: int,
        kl: str = "auto",
    ) -> None:
        if pairwise not in PAIRWISE_FAMILIES:
            raise ValueError(f"pairwise must be one of {PAIRWISE_FAMILIES}, got {pairwise!r}")
        n = int(num_latents)
        self.num_latents = n
        self.pairwise = pairwise
        edges = make_edges(None if pairwise == "none" else graph, n)
        if edges.numel():
            edges = Potentials(torch.zeros(1, n, 2), edges, torch.zeros(1, len(edges), 2, 2)).edges
        self.register_buffer("edges", edges.long(), persistent=False)
        self.graph_name = graph if isinstance(graph, str) or graph is None else type(graph).__name__
        self.exact_kl_max_vars = int(exact_kl_max_vars)
        self._forest = is_forest(self.edges.cpu(), n)
        if kl not in KL_CHOICES:
            raise ValueError(f"kl must be one of {KL_CHOICES}, got {kl!r}")
        tractable = self.num_edges == 0 or self._forest or n <= self.exact_kl_max_vars
        if kl == "exact" and not tractable:
            raise ValueError(
                f"kl='exact' needs the Gibbs log-partition of {n} coupled binary latents, i.e. "
                f"enumerating 2^{n} assignments, above exact_kl_max_vars={self.exact_kl_max_vars} "
                "on a graph with cycles; use kl='auto' or 'factorised', or a forest graph"
            )
        exact = self.num_edges == 0 or (tractable and kl != "factorised")
        self.kl_kind = "exact-gibbs" if exact else "factorised-approx"
        self.solver = select(self.structure, solver)  # checked; the run may replace it
        self._checked_solver: Solver | None = None

    # ------------------------------------------------------------ structure
    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.num_latents, 2

    @property
    def structure(self) -> Structure:
        """``n`` binary latents on :attr:`edges`; supermodular for ``pairwise="supermodular"``
        (softplus couplings), what :func:`~structvae.solvers.select` decides from."""
        edges = self.edges if self.num_edges else None
        return Structure(self.num_latents, 2, edges, self.pairwise == "supermodular")

    @property
    def default_solver(self) -> str:
        """``graphcut`` for supermodular couplings, the structural choice
        (:func:`~structvae.solvers.auto.auto_solver_name`: tree / exact / ilp) for general ones,
        ``independent`` without edges (:func:`~structvae.solvers.select.default_solver_name`)."""
        return default_solver_name(self.structure)

    def check_solver(self, solver: str | Solver) -> None:
        """Raise ``ValueError`` (before any training) when ``solver`` cannot maximise this model's
        potentials exactly: graph cut on general couplings (possibly negative: not
        supermodular), ``independent`` with edges, ``tree`` on a graph with a cycle,
        ``exact`` above its enumeration limit (:func:`~structvae.solvers.select.check_solver`)."""
        where = (
            f"{self.structure_label} (pairwise={self.pairwise!r}, n={self.num_latents}, "
            f"{self.num_edges} edges)"
        )
        check_solver(self.structure, solver, who=where)

    def use_solver(self, solver: Solver) -> None:
        """Adopt the run's solver (checked with :meth:`check_solver`) for samples,
        reconstructions and estimators without a solver of their own."""
        self.check_solver(solver)
        self.solver = get_solver(solver)

    # ------------------------------------------------------------ potentials
    def couplings(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw encoder outputs ``[B, E]`` -> couplings θ_ij (softplus for supermodular)."""
        return F.softplus(raw) if self.pairwise == "supermodular" else raw

    def binary_potentials(self, theta: torch.Tensor, raw: torch.Tensor | None) -> Potentials:
        """Unary scores ``theta [B, n]`` and raw couplings ``[B, E]`` -> binary-form potentials
        (K = 2) on the module's edges."""
        if not self.num_edges:
            return Potentials.binary(theta)
        return Potentials.binary(theta, self.edges, self.couplings(raw))

    def _one_hot(self, z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(z, 2).to(self._dtype)

    def perturb_max(self, potentials: Potentials, generator=None) -> torch.Tensor:
        """One perturb-max sample ``argmax h + γ`` (Gumbel on the unaries): long ``[B, n]``."""
        p = potentials.detach()
        g = sample_gumbel(p.unary.shape, device=p.device, dtype=p.dtype, generator=generator)
        return self.solver(p.perturb(g))

    def sample_latents(self, enc: Encoded, generator=None) -> torch.Tensor:
        """The evaluation sample: one perturb-max assignment (:meth:`perturb_max`)."""
        return self.perturb_max(enc.potentials, generator)

    # ------------------------------------------------------------------ KL
    def kl(self, potentials: Potentials) -> torch.Tensor:
        """``[B]``: ``KL(q || uniform)`` for the Gibbs ``q(z) ∝ exp h(z)`` (``kl_kind ==
        "exact-gibbs"``: no edges — closed form; a forest — sum-product, with the marginals
        from autograd of log Z; ``n ≤ exact_kl_max_vars`` — enumeration), else the KL of the
        factorised Bernoulli(sigmoid(θ_i)) distribution that ignores the couplings
        (``"factorised-approx"``, the paper's approximation). Differentiable.

        This is the Gibbs KL, not the KL of the perturb-max distribution that samples are drawn
        from; see :mod:`structvae.models.structured` for why ``recon + kl`` is then not a bound."""
        if not potentials.has_edges or self.kl_kind == "factorised-approx":
            return self._factorised_kl(potentials)
        if self._forest:
            return self._forest_kl(potentials)
        return binary_gibbs_kl(potentials)  # split enumeration of the 2^n assignments

    @staticmethod
    def _factorised_kl(p: Potentials) -> torch.Tensor:
        return terms.categorical_kl(p.unary)

    @staticmethod
    def _forest_kl(p: Potentials) -> torch.Tensor:
        outer_grad = torch.is_grad_enabled() and (p.unary.requires_grad or p.pairwise.requires_grad)
        with torch.enable_grad():
            # a table without a graph (evaluation, or a detached input) becomes a fresh leaf so
            # that its marginals still come out of autograd; both terms enter E_q[h]
            u, pw = (
                t if t.requires_grad else t.detach().requires_grad_() for t in (p.unary, p.pairwise)
            )
            log_z = tree_log_partition(Potentials(u, p.edges, pw, validate=False))
            mu_u, mu_pw = torch.autograd.grad(log_z.sum(), (u, pw), create_graph=outer_grad)
            expected_h = (mu_u * u).flatten(1).sum(1) + (mu_pw * pw).flatten(1).sum(1)
            kl = expected_h - log_z + p.num_vars * math.log(2)
        return kl if outer_grad else kl.detach()

    # ------------------------------------------------------- exact samples
    @property
    def loss_is_bound(self) -> bool:
        """Whether ``one_sample_loss`` estimates an upper bound on −log p(x): only without
        edges (with edges the sample is perturb-max, not Gibbs; see
        :mod:`structvae.models.structured`)."""
        return self.num_edges == 0

    @property
    def iwae_available(self) -> bool:
        """Whether the Gibbs q can be sampled and scored exactly (:meth:`proposal_samples`)."""
        return self.num_edges == 0 or self.num_latents <= self.exact_kl_max_vars

    def iwae_unavailable(self) -> str:
        return (
            f"iwae_nll needs exact samples and probabilities of the Gibbs q, i.e. enumerating "
            f"2^{self.num_latents} assignments, above the limit n <= {self.exact_kl_max_vars} "
            "(exact_kl_max_vars); perturb-max samples cannot be used instead because their "
            "probabilities are intractable"
        )

    def proposal(self, enc: Encoded, samples: int, generator=None) -> Proposal:
        """The importance-sampling proposal: the Gibbs q (exact, by enumeration, cached in
        ``enc.cache`` across chunks) where :attr:`iwae_available`, else the factorised q;
        uniform prior ``2^-n``."""
        z, log_q = self.proposal_samples(
            enc.potentials, samples, generator, self.float_dtype, self.iwae_available, enc.cache
        )
        return Proposal(z, log_q, torch.full_like(log_q, -self.num_latents * math.log(2)))

    def proposal_samples(
        self,
        potentials: Potentials,
        samples: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        gibbs: bool = True,
        cache: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples`` exact draws per row and their exact log-probabilities.

        ``gibbs=True`` with edges: the Gibbs ``q ∝ exp h`` by enumerating the ``2^n``
        assignments; otherwise the factorised ``Π_i Bernoulli(sigmoid θ_i)`` (unaries only; the
        Gibbs q itself when there are no edges). Returns long ``z [B, S, n]`` and ``log q
        [B, S]`` (``dtype``). Either is a valid importance-sampling proposal. ``cache``: a dict
        keeping the enumerated Gibbs table between calls on the same potentials.
        """
        n, dev = potentials.num_vars, potentials.device
        if gibbs and potentials.has_edges:
            cache = {} if cache is None else cache
            if "gibbs_log_q" not in cache:
                s = enumerate_scores(potentials).to(dtype)
                cache["gibbs_log_q"] = s - torch.logsumexp(s, 1, keepdim=True)  # [B, 2^n]
            logq_all = cache["gibbs_log_q"]
            idx = torch.multinomial(logq_all.exp(), samples, replacement=True, generator=generator)
            return all_assignments(n, 2, device=dev)[idx], logq_all.gather(1, idx)
        table = potentials.unary.detach().to(dtype)  # [B, n, 2]
        z = terms.gumbel_max(table, samples, generator)
        return z, terms.categorical_log_prob(table, z)
