"""structvae.inference.Gibbs against brute force written here from the definition
(itertools over every assignment, scores from the raw tables), for every backend."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from structvae import Potentials
from structvae.inference import BACKENDS, Gibbs, binary_gibbs_kl

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- brute force
def brute(unary: torch.Tensor, edges: list[tuple[int, int]], pairwise: torch.Tensor):
    """Every assignment ``[M, n]`` and its score ``[B, M]``, by loops over the tables."""
    B, n, K = unary.shape
    zs = torch.tensor(list(itertools.product(range(K), repeat=n)), dtype=torch.long)
    cols = []
    for z in zs.tolist():
        h = sum(unary[:, i, z[i]] for i in range(n))
        for e, (i, j) in enumerate(edges):
            h = h + pairwise[:, e, z[i], z[j]]
        cols.append(h)
    return zs, torch.stack(cols, 1)


def brute_marginals(zs, q, n, K, edges):
    unary = torch.stack([q @ (zs[:, i] == k).to(q.dtype) for i in range(n) for k in range(K)], 1)
    pair = [
        q @ ((zs[:, i] == a) & (zs[:, j] == c)).to(q.dtype)
        for (i, j) in edges
        for a in range(K)
        for c in range(K)
    ]
    B = q.shape[0]
    pw = torch.stack(pair, 1).reshape(B, len(edges), K, K) if edges else q.new_zeros(B, 0, K, K)
    return unary.reshape(B, n, K), pw


@st.composite
def problems(draw, binary: bool | None = None, max_n: int = 5):
    """Random potentials on a random graph (a random subset of pairs, a random forest, a
    chain, or no edges), float64 leaves that require grad."""
    K = 2 if binary else draw(st.integers(2, 3)) if binary is None else draw(st.integers(3, 4))
    n = draw(st.integers(1, max_n if K == 2 else 4))
    kind = draw(st.sampled_from(["none", "forest", "random", "complete"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if kind == "random":
        edges = [e for e in pairs if rng.random() < 0.5]
    elif kind == "complete":
        edges = pairs
    elif kind == "forest":  # each node but the first hangs off an earlier one, or starts a tree
        edges = [(int(rng.integers(0, j)), j) for j in range(1, n) if rng.random() < 0.8]
    else:
        edges = []
    B = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([0.3, 1.0, 3.0]))
    u = torch.tensor(rng.normal(size=(B, n, K)) * scale).requires_grad_()
    pw = torch.tensor(rng.normal(size=(B, len(edges), K, K)) * scale).requires_grad_()
    e = torch.tensor(edges, dtype=torch.long).reshape(-1, 2)
    return Potentials(u, e if edges else None, pw if edges else None), edges


def backends_for(p: Potentials) -> list[str]:
    names = [b for b, cls in BACKENDS.items() if cls.refusal(p) is None]
    assert "enumerate" in names  # every generated problem is small
    return names


# ----------------------------------------------------------------------- tests
@SETTINGS
@given(case=problems())
def test_log_partition_marginals_entropy_kl_log_prob(case):
    p, edges = case
    B, n, K = p.unary.shape
    zs, s = brute(p.unary, edges, p.pairwise)
    log_z = torch.logsumexp(s, 1)
    q = torch.softmax(s, 1)
    mu_u, mu_pw = brute_marginals(zs, q, n, K, edges)
    entropy = -(q * torch.log(q)).sum(1)
    z = zs[torch.randint(len(zs), (2, B), generator=torch.Generator().manual_seed(0))]  # [2,B,n]
    for name in backends_for(p):
        g = Gibbs(p, backend=name)
        assert g.backend == name
        torch.testing.assert_close(g.log_partition, log_z, atol=1e-9, rtol=1e-9)
        mu = g.marginals
        torch.testing.assert_close(mu.unary, mu_u, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(mu.pairwise, mu_pw, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(g.entropy(), entropy, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(
            g.kl_to_uniform(), n * math.log(K) - entropy, atol=1e-9, rtol=1e-7
        )
        idx = (z * K ** torch.arange(n - 1, -1, -1)).sum(-1)  # [2, B] lexicographic
        ref = (s - log_z[:, None]).gather(1, idx.t()).t()
        torch.testing.assert_close(g.log_prob(z), ref, atol=1e-9, rtol=1e-9)
        best = g.argmax
        assert best.shape == (B, n)
        got = s.gather(1, (best * K ** torch.arange(n - 1, -1, -1)).sum(-1)[:, None])[:, 0]
        torch.testing.assert_close(got, s.max(1).values, atol=1e-9, rtol=0)


@SETTINGS
@given(case=problems())
def test_marginals_are_the_gradient_of_log_partition(case):
    p, edges = case
    for name in backends_for(p):
        g = Gibbs(p, backend=name)
        inputs = [p.unary, p.pairwise] if edges else [p.unary]
        grads = torch.autograd.grad(g.log_partition.sum(), inputs)
        mu = g.marginals
        torch.testing.assert_close(grads[0], mu.unary, atol=1e-9, rtol=1e-7)
        if edges:
            torch.testing.assert_close(grads[1], mu.pairwise, atol=1e-9, rtol=1e-7)


@SETTINGS
@given(case=problems(), seed=st.integers(0, 2**16))
def test_gradients_of_entropy_kl_and_marginals_match_brute_force(case, seed):
    p, edges = case
    B, n, K = p.unary.shape
    inputs = [p.unary, p.pairwise] if edges else [p.unary]
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(B, dtype=torch.float64, generator=gen)
    wm = torch.randn(B, n, K, dtype=torch.float64, generator=gen)
    # another distribution without edges (a factorised q) for Gibbs.kl
    r = Potentials(torch.randn(B, n, K, dtype=torch.float64, generator=gen).requires_grad_())
    zs, s = brute(p.unary, edges, p.pairwise)
    q = torch.softmax(s, 1)
    log_q = torch.log_softmax(s, 1)
    _, s_r = brute(r.unary, [], r.pairwise)
    kl_ref = (q * (log_q - torch.log_softmax(s_r, 1))).sum(1)
    mu_ref = brute_marginals(zs, q, n, K, edges)[0]
    refs = [
        torch.autograd.grad(((q * log_q).sum(1) * w).sum(), inputs, retain_graph=True),
        torch.autograd.grad((kl_ref * w).sum(), inputs + [r.unary], retain_graph=True),
        torch.autograd.grad((mu_ref * wm).sum(), inputs),
    ]
    for name in backends_for(p):

        def fresh(name=name):  # a Gibbs caches its scores (and their graph): one per backward
            return Gibbs(p, backend=name)

        got = [
            torch.autograd.grad((-fresh().entropy() * w).sum(), inputs),
            torch.autograd.grad((fresh().kl(Gibbs(r)) * w).sum(), inputs + [r.unary]),
            torch.autograd.grad((fresh().marginals.unary * wm).sum(), inputs),
        ]
        torch.testing.assert_close(fresh().kl(Gibbs(r)), kl_ref, atol=1e-9, rtol=1e-7)
        for a, b in zip(got, refs, strict=True):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, atol=1e-8, rtol=1e-6)


def _pooled_chi2(counts: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic with the cells of expected count < 5 pooled into one."""
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=problems(max_n=4), seed=st.integers(0, 2**16))
def test_sampling_frequencies(case, seed):
    p, edges = case
    B, n, K = p.unary.shape
    zs, s = brute(p.unary.detach(), edges, p.pairwise.detach())
    q = torch.softmax(s, 1).numpy()
    S = 3000
    for name in backends_for(p):
        gen = torch.Generator().manual_seed(seed)
        z = Gibbs(p.detach(), backend=name).sample((S,), generator=gen)
        assert z.shape == (S, B, n) and z.dtype == torch.long
        idx = (z * K ** torch.arange(n - 1, -1, -1)).sum(-1).numpy()  # [S, B]
        for b in range(B):
            counts = np.bincount(idx[:, b], minlength=len(zs))
            stat, df = _pooled_chi2(counts, S * q[b])
            if df > 0:  # p-value 1e-6: a false alarm in about one run of a million
                assert stat < chi2.ppf(1 - 1e-6, df), (name, b, stat, df)


def test_sample_shapes_generator_and_float32():
    torch.manual_seed(0)
    p = Potentials(
        torch.randn(4, 6, 2),
        torch.tensor([[0, 1], [1, 2], [0, 2], [3, 4]]),
        torch.randn(4, 4, 2, 2),
    )
    for name in ("split", "enumerate"):
        g = Gibbs(p, backend=name)
        a = g.sample((2, 3), generator=torch.Generator().manual_seed(1))
        b = g.sample((2, 3), generator=torch.Generator().manual_seed(1))
        assert a.shape == (2, 3, 4, 6) and torch.equal(a, b)
        assert g.sample().shape == (4, 6)
        assert g.log_partition.dtype == torch.float32
    assert Gibbs(p).backend == "split"
    assert Gibbs(p[:,]).batch_shape == (4,) and Gibbs(p).event_shape == (6,)
    kl = torch.distributions.kl_divergence(Gibbs(p), Gibbs(Potentials(p.unary)))
    assert kl.shape == (4,) and bool((kl > -1e-5).all())


def test_backend_choice_limits_and_errors():
    chain = torch.tensor([[i, i + 1] for i in range(29)])
    big_forest = Potentials(torch.randn(2, 30, 3), chain, torch.randn(2, 29, 3, 3))
    assert Gibbs(big_forest).backend == "forest"  # no limit on n for forests
    assert Gibbs(Potentials(torch.randn(2, 40, 5))).backend == "forest"
    ring = torch.cat([chain, torch.tensor([[0, 29]])])
    cyc = Potentials(torch.randn(1, 30, 2), ring, torch.randn(1, 30, 2, 2))
    with pytest.raises(ValueError, match=r"no exact backend for n = 30, K = 2.*split: .*n <= 26"):
        Gibbs(cyc)
    small_cycle = Potentials(
        torch.randn(1, 3, 3), torch.tensor([[0, 1], [1, 2], [0, 2]]), torch.randn(1, 3, 3, 3)
    )
    assert Gibbs(small_cycle).backend == "enumerate"
    with pytest.raises(ValueError, match="forest: sum-product needs a forest"):
        Gibbs(small_cycle, backend="forest")
    tri = Potentials(
        torch.randn(1, 5, 3), torch.tensor([[0, 1], [1, 2], [0, 2]]), torch.randn(1, 3, 3, 3)
    )  # E < n, and still a cycle
    with pytest.raises(ValueError, match=r"forest: .*cycle through edge \(0, 1\)"):
        Gibbs(tri, backend="forest")
    assert Gibbs(tri).backend == "enumerate"
    with pytest.raises(ValueError, match="split: split enumeration needs K = 2"):
        Gibbs(small_cycle, backend="split")
    with pytest.raises(ValueError, match="above max_assignments = 20"):
        Gibbs(small_cycle, max_assignments=20)
    with pytest.raises(ValueError, match="unknown backend 'bp'"):
        Gibbs(small_cycle, backend="bp")
    with pytest.raises(ValueError, match="expects a structvae.Potentials"):
        Gibbs(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"z must have shape \[..., B, n\]"):
        Gibbs(small_cycle).log_prob(torch.zeros(3, dtype=torch.long))


def test_split_kl_is_the_fused_binary_gibbs_kl_and_old_names_work():
    import structvae
    from structvae.gibbs import MAX_GIBBS_VARS, split_argmax
    from structvae.solvers import all_assignments, enumerate_scores, tree_log_partition

    assert MAX_GIBBS_VARS == 26 and callable(split_argmax) and callable(all_assignments)
    assert structvae.binary_gibbs_kl is binary_gibbs_kl and callable(enumerate_scores)
    assert callable(tree_log_partition) and structvae.Gibbs is Gibbs
    p = Potentials.binary(
        torch.randn(3, 7), torch.tensor([[0, 1], [2, 5], [1, 6]]), torch.randn(3, 3)
    )
    torch.testing.assert_close(Gibbs(p, backend="split").kl_to_uniform(), binary_gibbs_kl(p))


@SETTINGS
@given(case=problems(binary=True))
def test_binary_form_reproduces_every_score(case):
    p, edges = case
    zs, s = brute(p.unary, edges, p.pairwise)
    form = p.binary_form()
    zf = zs.to(torch.float64)
    pair = zf[:, [i for i, _ in edges]] * zf[:, [j for _, j in edges]]  # [M, E]
    got = form.constant[:, None] + form.linear @ zf.t() + form.coupling @ pair.t()
    torch.testing.assert_close(got, s, atol=1e-9, rtol=1e-9)
    margin = p.pairwise[..., 0, 0] + p.pairwise[..., 1, 1] - p.pairwise[..., 0, 1]
    torch.testing.assert_close(form.coupling, margin - p.pairwise[..., 1, 0])
    with pytest.raises(ValueError, match="K = 2"):
        Potentials(torch.zeros(1, 2, 3)).binary_form()
