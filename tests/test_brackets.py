"""Structure of every bracket construction at random, untrained parameters (float64).

Bar (specs/brackets_and_systems.md): ||L + L^T||_inf <= 1e-12, lambda_min(M) >= -1e-12,
||L dS||, ||M dE|| <= 1e-10 relative for exact constructions, gradcheck through each.
"""

import tempfile

import pytest
import torch

from sp_dynamics.brackets import (
    BasisBracket,
    CanonicalJ,
    KnownBracket,
    LearnedSkew,
    MixedBracket,
    LearnedSPD,
    ProjectionBracket,
    SoftBracket,
    degeneracy_penalty,
    make_bracket,
    project_out,
    projector,
)

DIMS = [2, 3, 4, 7]


def _bracket(kind: str, n: int, state_dependent: bool = False):
    torch.manual_seed(n + 17 * state_dependent)
    if kind == "projection":
        return ProjectionBracket(n, rank=max(1, n - 1), state_dependent=state_dependent).double()
    if kind == "basis":
        return BasisBracket(n).double()
    if kind == "mixed":
        b = MixedBracket(n, state_dependent=state_dependent, state_dependent_L=state_dependent).double()
        if b.g is not None:  # zero-initialised: perturb so that the state-dependent friction is exercised
            with torch.no_grad():
                b.g[-1].weight.normal_(0.0, 0.3)
        return b
    if kind == "mixed_power":  # power-law friction fed grad E: perturbed so that both its parts act
        b = MixedBracket(n, friction_input="gradient", friction_law="power").double()
        with torch.no_grad():
            b.g[-1].weight.normal_(0.0, 0.3)
            b.power.weight.normal_(0.0, 0.5)
        return b
    if kind == "mixed_coords":  # friction fed a subset of grad E (the gas containers' temperatures)
        b = MixedBracket(n, friction_input="gradient", friction_coords=tuple(range(n // 2, n))).double()
        with torch.no_grad():
            b.g[-1].weight.normal_(0.0, 0.3)
        return b
    if kind == "soft":
        return SoftBracket(n, state_dependent=state_dependent).double()
    if kind == "known":
        A = torch.randn(n, n, dtype=torch.float64)
        C = torch.randn(n, n, dtype=torch.float64)
        return KnownBracket(lambda x: (A - A.T).expand(*x.shape[:-1], n, n), lambda x: (C @ C.T).expand(*x.shape[:-1], n, n), n)
    raise AssertionError(kind)


CONSTRUCTIONS = [
    ("projection", False),
    ("projection", True),
    ("basis", False),
    ("mixed", False),
    ("mixed", True),
    ("mixed_power", True),
    ("mixed_coords", True),
    ("soft", False),
    ("soft", True),
    ("known", False),
]
IDS = [f"{k}{'-statedep' if s else ''}" for k, s in CONSTRUCTIONS]


def _inputs(n, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=g, dtype=torch.float64)
    dE = torch.randn(batch, n, generator=g, dtype=torch.float64)
    dS = torch.randn(batch, n, generator=g, dtype=torch.float64)
    return x, dE, dS


def _rel(res, L, M, vec):
    # residual relative to the size of the bracket, max over the batch of ||L||_2 + ||M||_2,
    # times ||v||. (Not ||L|| alone: for n = 2 the projected L is identically zero, and not per
    # state: where P B^T D B P happens to be tiny, round-off would look large.)
    size = (torch.linalg.matrix_norm(L, ord=2) + torch.linalg.matrix_norm(M, ord=2)).max()
    return (res.norm(dim=-1) / (size * vec.norm(dim=-1))).max()


@pytest.mark.parametrize("n", DIMS)
@pytest.mark.parametrize("kind,statedep", CONSTRUCTIONS, ids=IDS)
def test_skew_and_psd(kind, statedep, n):
    # Catches: a construction whose L loses skew-symmetry or whose M loses symmetry/PSD-ness
    # (e.g. a sign error in P A P, a missing transpose, an unconstrained diagonal of C).
    br = _bracket(kind, n, statedep)
    x, dE, dS = _inputs(n)
    L, M = br.matrices(x, dE, dS)
    assert L.shape == M.shape == (64, n, n)
    assert (L + L.transpose(-1, -2)).abs().max() <= 1e-12
    assert (M - M.transpose(-1, -2)).abs().max() <= 1e-12
    assert torch.linalg.eigvalsh(M).min() >= -1e-12


@pytest.mark.parametrize("n", DIMS)
@pytest.mark.parametrize("kind,statedep", [c for c in CONSTRUCTIONS if c[0] != "soft"], ids=[i for i in IDS if "soft" not in i])
def test_exact_degeneracy(kind, statedep, n):
    # Catches: exact constructions that no longer annihilate the gradients (L dS != 0 or
    # M dE != 0), which would make dE/dt != 0 or break the second law.
    br = _bracket(kind, n, statedep)
    assert br.exact
    x, dE, dS = _inputs(n, seed=1)
    L, M = br.matrices(x, dE, dS)
    r_L, r_M = br.residuals(x, dE, dS)
    assert _rel(r_L, L, M, dS) <= 1e-10
    assert _rel(r_M, L, M, dE) <= 1e-10
    # pointwise energy conservation and entropy production of the field L dE + M dS
    F = br.field(x, dE, dS)
    dEdt = (dE * F).sum(-1)
    dSdt = (dS * F).sum(-1)
    assert (dEdt.abs() / (dE.norm(dim=-1) * F.norm(dim=-1).max())).max() <= 1e-10
    assert dSdt.min() >= -1e-12


@pytest.mark.parametrize("n", [3, 4])
def test_soft_bracket_reports_nonzero_residuals_and_penalty(n):
    # Catches: a soft construction that silently reports zero residuals (its penalty would then
    # never train the degeneracy in), or a penalty that is not ||L dS||^2 + ||M dE||^2.
    br = _bracket("soft", n)
    assert not br.exact
    x, dE, dS = _inputs(n, seed=2)
    L, M = br.matrices(x, dE, dS)
    r_L, r_M = br.residuals(x, dE, dS)
    assert r_L.abs().max() > 1e-3 and r_M.abs().max() > 1e-3
    expected = degeneracy_penalty(L, M, dE, dS)
    assert torch.allclose(br.penalty(x, dE, dS), expected, rtol=1e-12)
    # the penalty is trainable: a few steps reduce it
    opt = torch.optim.Adam(br.parameters(), lr=0.05)
    p0 = br.penalty(x, dE, dS).item()
    for _ in range(50):
        opt.zero_grad()
        loss = br.penalty(x, dE, dS)
        loss.backward()
        opt.step()
    assert br.penalty(x, dE, dS).item() < 0.5 * p0


@pytest.mark.parametrize("n", DIMS)
@pytest.mark.parametrize("kind,statedep", CONSTRUCTIONS, ids=IDS)
def test_matrix_free_apply_matches_matrices(kind, statedep, n):
    # Catches: the matrix-free formulas drifting from the materialised L and M.
    br = _bracket(kind, n, statedep)
    x, dE, dS = _inputs(n, seed=3)
    L, M = br.matrices(x, dE, dS)
    l_dE, m_dS = br.terms(x, dE, dS)
    assert torch.allclose(l_dE, (L @ dE.unsqueeze(-1)).squeeze(-1), atol=1e-12, rtol=1e-10)
    assert torch.allclose(m_dS, (M @ dS.unsqueeze(-1)).squeeze(-1), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind,statedep", CONSTRUCTIONS, ids=IDS)
def test_row_and_column_vector_forms_agree(kind, statedep):
    # Some codes write the field with row vectors, -(dE . L) + dS . M. With L skew and M
    # symmetric that equals L dE + M dS; catches a transposed bracket.
    br = _bracket(kind, 4, statedep)
    x, dE, dS = _inputs(4, seed=4)
    L, M = br.matrices(x, dE, dS)
    row = -(dE.unsqueeze(-2) @ L).squeeze(-2) + (dS.unsqueeze(-2) @ M).squeeze(-2)
    assert torch.allclose(row, br.field(x, dE, dS), atol=1e-12)


@pytest.mark.parametrize("kind", ["projection", "mixed", "mixed_power", "known"])
def test_vanishing_gradient_is_finite(kind):
    # Behaviour at grad S -> 0 and grad E -> 0: the eps guard keeps everything finite and the
    # projector tends to the identity (no NaN from 0/0).
    br = _bracket(kind, 3)
    x = torch.randn(5, 3, dtype=torch.float64)
    dE = torch.randn(5, 3, dtype=torch.float64)
    for scale in [1e-3, 1e-8, 1e-15, 0.0]:
        dS = scale * torch.randn(5, 3, dtype=torch.float64)
        L, M = br.matrices(x, dE, dS)
        F = br.field(x, dE, dS)
        assert torch.isfinite(L).all() and torch.isfinite(M).all() and torch.isfinite(F).all()
    P = projector(torch.zeros(3, dtype=torch.float64))
    assert torch.equal(P, torch.eye(3, dtype=torch.float64))
    assert torch.equal(project_out(torch.zeros(3), torch.ones(3)), torch.ones(3))


@pytest.mark.parametrize("kind,statedep", CONSTRUCTIONS, ids=IDS)
def test_gradcheck_through_brackets(kind, statedep):
    # Catches: non-differentiable or wrongly differentiated constructions (custom ops, in-place
    # writes into the triangle, detach in the projection).
    br = _bracket(kind, 3, statedep)
    x, dE, dS = (t[:3].clone().requires_grad_(True) for t in _inputs(3, seed=5))
    assert torch.autograd.gradcheck(lambda x, a, b: br.field(x, a, b), (x, dE, dS))
    assert torch.autograd.gradgradcheck(lambda x, a, b: br.field(x, a, b), (x, dE, dS))
    inputs = (x.detach(), dE.detach(), dS.detach())
    for name, p in br.named_parameters():  # gradients w.r.t. every learned parameter too
        v = p.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda v: torch.func.functional_call(br, {name: v}, inputs), (v,))


def test_canonical_J():
    # Catches: a wrong (q, p) convention: dq/dt must be +dH/dp and dp/dt = -dH/dq.
    J = CanonicalJ(2, n_extra=1)
    M = J.matrix()
    assert M.shape == (5, 5)
    assert torch.equal(M, -M.T)
    v = torch.arange(1.0, 6.0, dtype=torch.float64)
    assert torch.equal(J.matvec(v), torch.tensor([3.0, 4.0, -1.0, -2.0, 0.0], dtype=torch.float64))
    assert torch.equal(J.matvec(v), M @ v)
    assert torch.equal(M[:4, :4] @ M[:4, :4], -torch.eye(4, dtype=torch.float64))  # J^2 = -I
    with pytest.raises(ValueError):
        CanonicalJ(0)


def test_learned_spd_is_definite_with_eps_and_skew_state_dependent():
    # Catches: an SPD construction that can lose definiteness, and state-dependent matrices that
    # ignore the state.
    spd = LearnedSPD(4, eps=1e-3).double()
    with torch.no_grad():
        spd.coef.value.fill_(-50.0)  # softplus diagonal ~ 0: only eps keeps M definite
    assert torch.linalg.eigvalsh(spd.matrix()).min() >= 1e-3 - 1e-12
    skew = LearnedSkew(3, state_dependent=True).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    Ls = skew.matrix(x)
    assert Ls.shape == (2, 3, 3) and not torch.allclose(Ls[0], Ls[1])
    with pytest.raises(ValueError, match="needs the state"):
        skew.matrix(None)
    with pytest.raises(ValueError, match="eps"):
        LearnedSPD(2, eps=-1.0)


def test_power_law_friction_starts_constant_and_checks_its_arguments():
    # Catches: a power-law friction that does not start from the constant bracket (its exponents
    # and MLP head must be zero at initialisation and after a restart's re-initialisation), and
    # bad friction settings accepted silently.
    torch.manual_seed(0)
    b = MixedBracket(4, friction_input="gradient", friction_law="power").double()
    c = MixedBracket(4, state_dependent=False).double()
    c.load_state_dict({k: v for k, v in b.state_dict().items() if k in c.state_dict()})
    x, dE, dS = _inputs(4)
    assert torch.equal(b.field(x, dE, dS), c.field(x, dE, dS))
    with torch.no_grad():
        b.power.weight.fill_(1.0)
    b.reset_parameters()
    assert torch.count_nonzero(b.power.weight) == 0
    with pytest.raises(ValueError, match="friction_law"):
        MixedBracket(4, friction_law="exp")
    with pytest.raises(ValueError, match="friction_floor"):
        MixedBracket(4, friction_law="power", friction_floor=0.0)


def test_friction_coords_feed_only_those_components_and_are_checked():
    # Catches: MixedBracket(friction_coords=...) whose friction still reacts to the components
    # left out (for the gas containers, the piston force dE/dq that is steep at the walls), a
    # saved bracket that forgets the selection, and bad indices accepted silently.
    from sp_dynamics.serialization import load, save

    b = _bracket("mixed_coords", 4)  # g sees dE_2 and dE_3
    x, dE, dS = _inputs(4)
    moved = dE.clone()
    moved[:, :2] += torch.randn(moved.shape[0], 2, dtype=torch.float64)
    assert torch.equal(b._log_d(x, dE), b._log_d(x, moved))
    moved[:, 3] += 0.1
    assert not torch.allclose(b._log_d(x, dE), b._log_d(x, moved))
    assert b.g[0].in_features == 2
    with tempfile.TemporaryDirectory() as tmp:
        again = load(save(b, tmp + "/b"))
    assert again.friction_coords == (2, 3) and torch.equal(again.field(x, dE, dS), b.field(x, dE, dS))
    for bad in [(), (0, 0), (4,), (-1,), (1.5,)]:
        with pytest.raises(ValueError, match="friction_coords"):
            MixedBracket(4, friction_input="gradient", friction_coords=bad)


def test_make_bracket_unknown_name():
    with pytest.raises(ValueError, match="available"):
        make_bracket("nope", 3)
