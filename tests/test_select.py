"""The one solver decision: solvers.select over a Structure, and get_solver("auto")."""

import itertools

import pytest
import torch

import structvae as sv
from structvae.graphs import make_edges
from structvae.solvers import AutoSolver, Structure, get_solver, select


def _brute_max(p: sv.Potentials) -> torch.Tensor:
    """Max score per sample by looping over every assignment (independent of the solvers)."""
    n, K = p.num_vars, p.num_states
    best = torch.full((p.batch_size,), -torch.inf, dtype=torch.float64)
    for z in itertools.product(range(K), repeat=n):
        zz = torch.tensor(z).expand(p.batch_size, n)
        s = p.unary.gather(-1, zz[..., None])[..., 0].sum(-1)
        for e, (i, j) in enumerate(p.edges.tolist()):
            s = s + p.pairwise[:, e, z[i], z[j]]
        best = torch.maximum(best, s.double())
    return best


def _problem(n, K, graph, supermodular, seed, B=6):
    g = torch.Generator().manual_seed(seed)
    edges = make_edges(graph, n)
    u = torch.randn(B, n, K, generator=g, dtype=torch.float64)
    if not edges.numel():
        return sv.Potentials(u), Structure(n, K, None, supermodular)
    if supermodular:  # the binary form theta_ij z_i z_j with theta_ij >= 0
        theta = torch.rand(B, edges.shape[0], generator=g, dtype=torch.float64) * 2
        p = sv.Potentials.binary(u[..., 1] - u[..., 0], edges, theta)
    else:
        pw = torch.randn(B, edges.shape[0], K, K, generator=g, dtype=torch.float64)
        p = sv.Potentials(u, edges, pw)
    return p, Structure(n, K, edges, supermodular)


CASES = [
    (4, 3, "none", False, "independent"),
    (5, 2, "complete", True, "graphcut"),
    (5, 2, "complete", False, "exact"),
    (6, 3, "chain", False, "tree"),
    (5, 2, "tree", True, "graphcut"),
    (4, 3, "complete", False, "exact"),
]


@pytest.mark.parametrize("n, K, graph, supermodular, expected", CASES)
def test_select_auto_picks_the_documented_solver_and_it_is_exact(
    n, K, graph, supermodular, expected
):
    p, structure = _problem(n, K, graph, supermodular, seed=n * 10 + K)
    solver = select(structure)
    assert solver.name == expected
    assert select(structure, None).name == expected
    got = p.score(solver(p)).double()
    assert torch.allclose(got, _brute_max(p), rtol=1e-9, atol=1e-9)


def test_select_auto_above_enumeration_and_without_forest_is_ilp():
    assert select(Structure(30, 2, make_edges("complete", 30))).name == "ilp"


@pytest.mark.parametrize(
    "structure, request_, match",
    [
        (Structure(5, 2, make_edges("complete", 5)), "graphcut", "supermodular"),
        (Structure(5, 2, make_edges("complete", 5), True), "independent", "independent"),
        (Structure(5, 2, make_edges("complete", 5)), "tree", "forest"),
        (Structure(30, 2, make_edges("complete", 30)), "exact", "exceeds the limit"),
        (Structure(4, 3, make_edges("chain", 4), True), "graphcut", "K = 2"),
        (Structure(4, 3, None), "graphcut", "K = 2"),
        (Structure(4, 2, None), "nope", "unknown solver"),
    ],
)
def test_select_refuses_a_solver_that_cannot_solve_the_structure(structure, request_, match):
    with pytest.raises(ValueError, match=match):
        select(structure, request_)
    with pytest.raises(ValueError, match=match):
        select(structure, get_solver(request_) if request_ != "nope" else request_)


def test_select_accepts_and_passes_through_instances_and_options():
    s = Structure(5, 2, make_edges("complete", 5))
    ilp = get_solver("ilp")
    assert select(s, ilp) is ilp
    assert select(s, "exact", max_assignments=64).max_assignments == 64
    with pytest.raises(ValueError, match="already-built"):
        select(s, ilp, time_limit=1.0)
    with pytest.raises(ValueError, match="Structure"):
        select((5, 2), "auto")
    # no edges: any solver of the right K is exact
    assert select(Structure(5, 2, None), "graphcut").name == "graphcut"


def test_get_solver_auto_solves_by_structure_at_each_call():
    auto = get_solver("auto")
    assert isinstance(auto, AutoSolver) and "auto" in sv.available_solvers()
    for n, K, graph in [(4, 3, "none"), (6, 3, "chain"), (5, 2, "complete")]:
        p, _ = _problem(n, K, graph, False, seed=n + K)
        assert torch.allclose(p.score(auto(p)).double(), _brute_max(p), rtol=1e-9, atol=1e-9)
    assert auto.choose(_problem(6, 3, "chain", False, 0)[0]).name == "tree"


def test_models_expose_their_structure_and_use_the_selected_solver():
    from structvae.models import StructuredVAE

    m = StructuredVAE(5, pairwise="supermodular", input_dim=16, hidden=(8,))
    assert m.structure.supermodular and m.structure.num_edges == 10
    solver = select(m.structure, "auto")
    assert solver.name == "graphcut" == m.default_solver
    m.use_solver(solver)
    assert m.solver is solver
    g = StructuredVAE(5, pairwise="general", input_dim=16, hidden=(8,))
    with pytest.raises(ValueError, match="supermodular"):
        g.use_solver(get_solver("graphcut"))
