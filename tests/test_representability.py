"""Representability: do the true DNO and gas-containers fields lie in each learnable bracket class?

For a class that contains the true field, the test sets the bracket's parameters (and gives the
true E and S) and reproduces the true field to 1e-8 relative on random states. For a class that
does not, the test shows it with a certificate: with the true E and S, the constant projection
field ``P_S A P_S dE + P_E N P_E dS`` is *linear* in (A, N), so the best constant A and symmetric
N over sampled states is a linear least-squares problem (a relaxation that even drops N >= 0),
and its residual stays far above round-off. The written argument is in ``experiments/PROTOCOL.md``
("Representability").
"""

import math

import pytest
import torch

from sp_dynamics import GENERICNet, get_system
from sp_dynamics.brackets import BasisBracket, MixedBracket, project_out

F64 = torch.float64


def _states(name: str, n: int = 400, seed: int = 0):
    system = get_system(name)
    g = torch.Generator().manual_seed(seed)
    if name == "dno":
        x = torch.cat([4 * torch.rand(n, 2, generator=g, dtype=F64) - 2, 3 * torch.rand(n, 1, generator=g, dtype=F64)], -1)
    else:
        lo, hi = torch.tensor(system.state_low, dtype=F64), torch.tensor(system.state_high, dtype=F64)
        x = lo + (hi - lo) * torch.rand(n, 4, generator=g, dtype=F64)
    return system, x


def _rel(a, b):
    return float((a - b).detach().norm() / b.norm())


def _set_canonical_L(bracket):
    # L = P_S A P_S with A = J on (q, p): the strict lower triangle of A has entry (1, 0) = -1
    # (tril_indices order (1, 0), (2, 0), (2, 1), ...), every other entry 0.
    with torch.no_grad():
        bracket.A.coef.value.zero_()
        bracket.A.coef.value[0] = -1.0


def _known_model(system, mu, bracket):
    return GENERICNet(system.dim, bracket=bracket, energy=lambda x: system.E(mu, x),
                      entropy=lambda x: system.S(mu, x)).double()


def test_mixed_bracket_holds_the_true_dno_field_with_constant_parameters():
    # Catches: a change to MixedBracket (row convention, D factorisation, projection of L) that
    # takes the DNO -- the main dissipative benchmark -- out of the class it can learn exactly.
    system, x = _states("dno")
    mu = torch.tensor([3.3, 0.17], dtype=F64)
    br = MixedBracket(3, state_dependent=False).double()
    _set_canonical_L(br)
    with torch.no_grad():
        br.xi.zero_()
        br.xi[0, 2, 1] = 1.0               # rows Xi_0 dE = (0, dE_S, -dE_p) = (0, T, -p) = v
        br.C.zero_()
        br.C[0, 0] = math.sqrt(mu[1])      # D = gamma / (m T) with m = T = 1
    model = _known_model(system, mu, br)
    assert _rel(model(0.0, x), system.f(mu, x)) <= 1e-8


def test_basis_bracket_holds_the_true_dno_field_with_constant_parameters():
    # Catches: BasisBracket losing the DNO (GFINN's construction represents it with constants).
    system, x = _states("dno")
    mu = torch.tensor([2.1, 0.08], dtype=F64)
    br = BasisBracket(3, n_basis=2).double()
    with torch.no_grad():
        # L = B_S^T sigma B_S, rows dS^T Xi_k = e_q, e_p for dS = e_S; sigma = [[0, 1], [-1, 0]]
        br.xi_L.zero_()
        br.xi_L[0, 2, 0] = 1.0
        br.xi_L[1, 2, 1] = 1.0
        br.sigma_L.coef.value.fill_(-1.0)
        br.xi_M.zero_()
        br.xi_M[0, 2, 1] = 1.0
        # sigma_M = C C^T with C lower triangular, softplus diagonal: C = diag(sqrt(gamma), ~0)
        br.sigma_M.coef.value.copy_(torch.tensor([math.log(math.expm1(math.sqrt(mu[1]))), 0.0, -60.0], dtype=F64))
    model = _known_model(system, mu, br)
    assert _rel(model(0.0, x), system.f(mu, x)) <= 1e-8


def test_mixed_bracket_holds_the_true_gas_field_with_its_friction_law():
    # Catches: the state-dependent friction path (D = C diag(exp g(x)) C^T) losing the gas
    # containers: their friction is gamma / (T1 T2)^2 times the basis row (0, 0, T2, -T1).
    system, x = _states("gas_containers")
    mu = torch.tensor([7.3], dtype=F64)

    def log_friction(y):
        e1, e2 = system._internal(y)
        t1, t2 = 2 * e1 / 3, 2 * e2 / 3
        return (torch.log(mu[0]) - 2 * torch.log(t1 * t2)).unsqueeze(-1).expand(*y.shape[:-1], 4)

    br = MixedBracket(4, friction=log_friction).double()
    _set_canonical_L(br)
    with torch.no_grad():
        br.xi.zero_()
        br.xi[0, 3, 2] = 1.0               # rows (0, 0, dE_S2, -dE_S1) = (0, 0, T2, -T1)
        br.C.zero_()
        br.C[0, 0] = 1.0
    model = _known_model(system, mu, br)
    assert _rel(model(0.0, x), system.f(mu, x)) <= 1e-8


def test_power_law_friction_holds_the_gas_field_with_constant_parameters():
    # Catches: the power-law friction path (log D = P phi + MLP(phi), phi = log|grad E|) losing
    # the gas containers, whose friction gamma / (T1 T2)^2 is one power law of the forces T_i =
    # dE/dS_i: exponents (0, 0, -2, -2), the MLP a constant log gamma.
    system, x = _states("gas_containers")
    mu = torch.tensor([7.3], dtype=F64)
    br = MixedBracket(4, friction_input="gradient", friction_law="power", friction_floor=1e-12).double()
    _set_canonical_L(br)
    with torch.no_grad():
        br.xi.zero_()
        br.xi[0, 3, 2] = 1.0               # rows (0, 0, T2, -T1), as in the test above
        br.C.zero_()
        br.C[0, 0] = 1.0
        br.power.weight[0] = torch.tensor([0.0, 0.0, -2.0, -2.0], dtype=F64)
        br.g[-1].bias[0] = math.log(mu[0])
    model = _known_model(system, mu, br)
    assert _rel(model(0.0, x), system.f(mu, x)) <= 1e-8


def _best_constant_projection_residual(name: str, mu) -> float:
    """Relative residual of the least-squares best constant (A skew, N symmetric) projection
    field P_S A P_S dE + P_E N P_E dS with the true E, S (N >= 0 dropped: a lower bound)."""
    system, x = _states(name, n=600, seed=3)
    n = system.dim
    xg = x.clone().requires_grad_(True)
    dE = torch.autograd.grad(system.E(mu, xg).sum(), xg)[0].detach()
    dS = torch.autograd.grad(system.S(mu, xg).sum(), xg)[0].detach()
    columns = []
    for i in range(n):                     # basis of skew A: e_i e_j^T - e_j e_i^T
        for j in range(i):
            A = torch.zeros(n, n, dtype=F64)
            A[i, j], A[j, i] = 1.0, -1.0
            columns.append(project_out(dS, project_out(dS, dE) @ A.T))
    for i in range(n):                     # basis of symmetric N
        for j in range(i + 1):
            N = torch.zeros(n, n, dtype=F64)
            N[i, j] = N[j, i] = 1.0
            columns.append(project_out(dE, project_out(dE, dS) @ N.T))
    design = torch.stack([c.reshape(-1) for c in columns], -1)
    target = system.f(mu, x).reshape(-1)
    coef = torch.linalg.lstsq(design, target.unsqueeze(-1)).solution.squeeze(-1)
    return float((design @ coef - target).norm() / target.norm())


@pytest.mark.parametrize("name,mu", [("dno", [3.3, 0.17]), ("gas_containers", [7.3])])
def test_constant_projection_bracket_cannot_hold_the_true_field(name, mu):
    # Catches: a claim in the docs that the constant projection bracket is enough. The
    # least-squares certificate leaves a relative residual of 0.13 (DNO) and 0.10 (gas) with the
    # true E and S, while a class that contains the field reaches round-off (tests above).
    residual = _best_constant_projection_residual(name, torch.tensor(mu, dtype=F64))
    assert residual > 5e-3


def test_constant_basis_bracket_cannot_hold_the_true_gas_field():
    # Catches: a claim that GFINN's constant basis bracket learns the gas containers. With a
    # constant basis and the true S (grad S = (0, 0, 1, 1) is constant), L is a constant skew
    # matrix and M grad S = B_E^T Sigma B_E grad S with rows linear in grad E: the whole field is
    # a polynomial of degree <= 2 in the entries of grad E. The true entropy rates are rational
    # in them (gamma (T2 - T1) / (T1^2 T2) with T_i = grad E_{S_i}), so no constant basis holds
    # them. Certificate: the least-squares best polynomial of that form over sampled states
    # (a relaxation of the bracket class) still misses the true field.
    system, x = _states("gas_containers", n=600, seed=3)
    mu = torch.tensor([7.3], dtype=F64)
    xg = x.clone().requires_grad_(True)
    dE = torch.autograd.grad(system.E(mu, xg).sum(), xg)[0].detach()
    i, j = torch.triu_indices(4, 4)
    features = torch.cat([torch.ones(len(x), 1, dtype=F64), dE, dE[:, i] * dE[:, j]], -1)   # (N, 15)
    target = system.f(mu, x)
    coef = torch.linalg.lstsq(features, target).solution
    residual = (features @ coef - target)[:, 2:].norm() / target[:, 2:].norm()   # the entropy rates
    assert float(residual) > 1e-2
    # ... while the same relaxation holds the conservative part exactly (q' = p, p' = -dE/dq):
    assert float((features @ coef - target)[:, :2].norm() / target[:, :2].norm()) < 1e-10


@pytest.mark.parametrize("name", ["dno", "gas_containers"])
def test_state_dependent_projection_bracket_gives_rank_two_dissipation(name):
    # Catches: a claim that the state-dependent projection bracket holds the true fields exactly.
    # Their M is rank one (gamma v v^T). In P_E B^T D(x) B P_E with constant B, a rank-one
    # result needs rank r = 1 and P_E b parallel to v for a constant b, which the constant-
    # projection certificate above rules out; for r >= 2 the strictly positive definite D(x)
    # (Cholesky with softplus diagonal) makes M rank two wherever B P_E has rank two. So the
    # class holds these fields only in the limit of a singular D: the measured best fit is a
    # relative field error of 5e-4 (DNO) and 1.6e-3 (gas), experiments/results/generic_diagnosis.md.
    from sp_dynamics.brackets import ProjectionBracket

    system, x = _states(name, n=50)
    torch.manual_seed(0)
    br = ProjectionBracket(system.dim, rank=2, state_dependent=True).double()
    mu = torch.tensor([3.3, 0.17] if name == "dno" else [7.3], dtype=F64)
    xg = x.clone().requires_grad_(True)
    dE = torch.autograd.grad(system.E(mu, xg).sum(), xg)[0].detach()
    dS = torch.autograd.grad(system.S(mu, xg).sum(), xg)[0].detach()
    _, M = br.matrices(x, dE, dS)
    eig = torch.linalg.eigvalsh(M)                                    # ascending
    assert bool((eig[:, -2] > 1e-8 * eig[:, -1]).all())               # two positive eigenvalues
    true_eig = torch.linalg.eigvalsh(system.M(mu, x))
    assert bool((true_eig[:, -2].abs() < 1e-12 * true_eig[:, -1]).all())   # the truth: rank one
