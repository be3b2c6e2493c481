"""Models: structure by construction at random parameters, shapes, dtypes, bad input."""

import pytest
import torch

from sp_dynamics import GENERICNet, HamiltonianNN, PortHamiltonianNN, gradient
from sp_dynamics.brackets import CanonicalJ, ProjectionBracket

F64 = torch.float64


def test_hnn_field_is_J_grad_H():
    # Catches: a sign or ordering slip between (q, p) and the field.
    torch.manual_seed(0)
    model = HamiltonianNN(4).double()
    x = torch.randn(10, 4, dtype=F64)
    dH = gradient(model.energy, x)
    assert torch.allclose(model(0.0, x), CanonicalJ(2).matvec(dH), atol=1e-14)
    assert torch.allclose(model(0.0, x)[:, :2], dH[:, 2:])  # dq/dt = dH/dp


@pytest.mark.parametrize("separable", [False, True])
def test_hnn_pointwise_energy_conservation(separable):
    # Catches: any change that breaks dH/dt = grad H . J grad H = 0 for arbitrary weights.
    torch.manual_seed(1)
    model = HamiltonianNN(2, separable=separable).double()
    x = torch.randn(256, 2, dtype=F64)
    rate = (gradient(model.energy, x) * model(0.0, x)).sum(-1)
    assert rate.abs().max() <= 1e-14


def test_port_hamiltonian_dissipates_for_any_parameters():
    # Catches: a dissipation matrix that is not PSD (energy could grow) -- the sign is
    # guaranteed by R = C C^T, not learned. Tried at extreme parameter values too.
    for seed, scale in [(0, 1.0), (1, 100.0)]:
        torch.manual_seed(seed)
        model = PortHamiltonianNN(4, state_dependent_R=bool(seed)).double()
        with torch.no_grad():
            for p in model.R.parameters():
                p.mul_(scale)
        x = torch.randn(128, 4, dtype=F64)
        R = model.dissipation_matrix(x)
        assert torch.linalg.eigvalsh(R).min() >= -1e-10 * R.abs().max()
        rate = (gradient(model.energy, x) * model(0.0, x)).sum(-1)
        assert rate.max() <= 1e-12


@pytest.mark.parametrize("bracket", ["projection", "basis"])
def test_generic_net_rates(bracket):
    # Catches: a GENERIC model whose exact bracket no longer gives dE/dt = 0, dS/dt >= 0.
    torch.manual_seed(2)
    model = GENERICNet(4, bracket=bracket).double()
    x = torch.randn(256, 4, dtype=F64)
    dE, dS = model.gradients(x)
    f = model(0.0, x)
    assert ((dE * f).sum(-1).abs() / (dE.norm(dim=-1) * f.norm(dim=-1).max())).max() <= 1e-12
    assert (dS * f).sum(-1).min() >= -1e-14
    assert model.penalty(x) <= 1e-24


def test_generic_net_soft_penalty_is_positive():
    torch.manual_seed(3)
    model = GENERICNet(3, bracket="soft").double()
    assert model.penalty(torch.randn(32, 3, dtype=F64)) > 1e-6


def test_known_components():
    # Every component can be known (a function) or learned (a module): a GENERICNet built from
    # the DNO's true energy and entropy with a learned bracket still conserves energy.
    E = lambda x: x[..., 1] ** 2 / 2 - 3.0 * torch.cos(x[..., 0]) + x[..., 2]  # noqa: E731
    S = lambda x: x[..., 2]  # noqa: E731
    model = GENERICNet(3, energy=E, entropy=S, bracket=ProjectionBracket(3)).double()
    x = torch.randn(64, 3, dtype=F64)
    assert (gradient(E, x) * model(0.0, x)).sum(-1).abs().max() <= 1e-12
    hnn = HamiltonianNN(2, energy=lambda x: 0.5 * (x**2).sum(-1))
    assert torch.allclose(hnn(0.0, torch.tensor([1.0, 2.0])), torch.tensor([2.0, -1.0]))


@pytest.mark.parametrize("cls,dim", [(HamiltonianNN, 2), (PortHamiltonianNN, 2), (GENERICNet, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_batched_shapes_and_dtypes(cls, dim, dtype):
    model = cls(dim, hidden=16, depth=2).to(dtype)
    x = torch.randn(3, 4, 5, dim, dtype=dtype)
    out = model(0.0, x)
    assert out.shape == x.shape and out.dtype == dtype
    assert model.energy(x).shape == (3, 4, 5)
    flat = model(0.0, x.reshape(-1, dim)).reshape(x.shape)
    assert torch.allclose(out, flat, atol=1e-6 if dtype == torch.float32 else 1e-14)


def test_training_gradients_flow_and_inference_is_detached():
    model = HamiltonianNN(2, hidden=8, depth=1).double()
    x = torch.randn(16, 2, dtype=F64)
    loss = model(0.0, x).pow(2).mean()
    loss.backward()
    # The energy's final bias cannot affect grad H, so it (only it) receives no gradient.
    for name, p in model.named_parameters():
        if name == "energy_net.fn.2.bias":
            assert p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        assert not model(0.0, x).requires_grad


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        HamiltonianNN(3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        HamiltonianNN(2)(0.0, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="does not match"):
        GENERICNet(3, bracket=ProjectionBracket(4))
    with pytest.raises(ValueError, match="activation"):
        HamiltonianNN(2, act="relu6")
    with pytest.raises(ValueError, match="either"):
        HamiltonianNN(2, separable=True, energy=lambda x: x.sum(-1))


def test_split_potential_couples_each_entropy_to_the_positions_only(tmp_path):
    # Catches: a split potential U = sum_k U_k(q, s_k) that lets two further coordinates
    # interact (d2E/ds1 ds2 must vanish for every weight) or drops their coupling to q; the
    # structure stays exact and the model saves and loads with the option.
    import sp_dynamics as sp

    torch.manual_seed(0)
    model = GENERICNet(4, separable=1, split_potential=True).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    H = torch.func.vmap(torch.func.hessian(lambda y: model.energy(y)))(x)
    assert H[:, 2, 3].abs().max() < 1e-14 and H[:, 0, 1].abs().max() < 1e-14 and H[:, 1, 2:].abs().max() < 1e-14
    assert H[:, 0, 2].abs().min() > 1e-8 and H[:, 0, 3].abs().min() > 1e-8
    r_l, r_m = model.residuals(x)
    assert r_l.abs().max() < 1e-10 and r_m.abs().max() < 1e-10
    with pytest.raises(ValueError, match="needs separable"):
        GENERICNet(4, split_potential=True)
    with pytest.raises(ValueError, match="has none"):
        GENERICNet(4, separable=2, split_potential=True)
    sp.save(model, tmp_path / "m.pt")
    assert torch.equal(sp.load(tmp_path / "m.pt")(0.0, x), model(0.0, x))


def test_positive_potential_represents_the_gas_internal_energies(tmp_path):
    # Catches: a positive potential that is not exp of its network, that loses the split's
    # decoupling, or that cannot hold the gas containers' true
    # internal energies E_i = exp((2/3) S_i - (2/3) log V_i): with the first layer reading S_i and
    # the log-distance to the wall that bounds V_i, a network near its linear regime reproduces them
    # (representability of the option's reason to exist); the structure stays exact and the option
    # survives save/load.
    import sp_dynamics as sp
    from systems.gas_containers import GasContainers

    torch.manual_seed(0)
    walls = ((0, 0.0, 2.0),)
    model = GENERICNet(4, separable=1, split_potential=True, positive_potential=True, walls=walls).double()
    x = torch.rand(64, 4, dtype=torch.float64) * torch.tensor([1.6, 2.0, 2.0, 2.0], dtype=torch.float64) \
        + torch.tensor([0.2, -1.0, 1.0, 1.0], dtype=torch.float64)
    energy = model.energy_net.fn
    y = energy.standardize(x)  # identity standardisation: (q, p, S1, S2, log q, log(2 - q))
    assert torch.allclose(y[:, 4], x[:, 0].log()) and torch.allclose(y[:, 5], (2 - x[:, 0]).log())
    H = torch.func.vmap(torch.func.hessian(lambda s: model.energy(s)))(x)
    assert H[:, 2, 3].abs().max() < 1e-14 and H[:, 0, 1].abs().max() < 1e-14
    # Set each U_k = exp(c * (a . input)) with a small c, so tanh(c a.x) ~ c a.x, and the last
    # layer undoing c: log U_k = (2/3) S_k - (2/3) log V_k up to O(c^2) terms.
    c = 1e-4
    with torch.no_grad():
        for k, u in enumerate(energy.potentials):
            layers = [m for m in u.modules() if isinstance(m, torch.nn.Linear)]
            for layer in layers:
                layer.weight.zero_(), layer.bias.zero_()
            a = torch.zeros(layers[0].in_features, dtype=torch.float64)  # inputs (q, S_k, log q, log(2 - q))
            a[1], a[2 + k] = 2 / 3, -2 / 3
            layers[0].weight[0] = c * a
            for layer in layers[1:-1]:
                layer.weight[0, 0] = 1.0
            layers[-1].weight[0, 0] = 1 / c
        for layer in (m for m in energy.kinetic.modules() if isinstance(m, torch.nn.Linear)):
            layer.weight.zero_(), layer.bias.zero_()
    true = GasContainers().E(torch.ones(1, dtype=torch.float64), x) - x[:, 1] ** 2 / 2
    assert torch.allclose(model.energy(x), true, rtol=1e-6, atol=0)
    r_l, r_m = model.residuals(x)
    assert r_l.abs().max() < 1e-10 and r_m.abs().max() < 1e-10
    with pytest.raises(ValueError, match="positive_potential=True needs separable"):
        GENERICNet(4, positive_potential=True)
    sp.save(model, tmp_path / "m.pt")
    assert torch.equal(sp.load(tmp_path / "m.pt")(0.0, x), model(0.0, x))


def test_separable_generic_energy_has_no_position_momentum_coupling(tmp_path):
    # Catches: a KineticPotential energy that mixes p into the potential (or q into the kinetic
    # part): its mixed second derivatives d2E/dq dp and d2E/dp ds must vanish for every weight, so
    # the force -dE/dq does not change with the momentum. Also: the structure stays exact and the
    # model saves and loads.
    import sp_dynamics as sp

    torch.manual_seed(0)
    model = GENERICNet(4, separable=1).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    H = torch.func.vmap(torch.func.hessian(lambda y: model.energy(y)))(x)
    assert H[:, 0, 1].abs().max() < 1e-14 and H[:, 1, 2:].abs().max() < 1e-14
    assert H[:, 0, 2:].abs().max() > 1e-6  # U(q, s) does couple q and the entropies
    r_l, r_m = model.residuals(x)
    assert r_l.abs().max() < 1e-10 and r_m.abs().max() < 1e-10
    with pytest.raises(ValueError, match="separable"):
        GENERICNet(4, separable=1, energy=lambda y: y.sum(-1))
    with pytest.raises(ValueError, match="1 <= d"):
        GENERICNet(3, separable=2)
    sp.save(model, tmp_path / "m.pt")
    assert torch.equal(sp.load(tmp_path / "m.pt")(0.0, x), model(0.0, x))


def _gas_like_states(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    lo, hi = torch.tensor([0.2, -1.0, 1.0, 1.0]), torch.tensor([1.8, 1.0, 3.0, 3.0])
    return (lo + (hi - lo) * torch.rand(n, 4, generator=g)).double()


@pytest.mark.parametrize("separable", [0, 1])
def test_wall_inputs_keep_structure_and_exact_gradients(tmp_path, separable):
    # Catches: log-distance wall inputs (GENERICNet(walls=...)) that break the exact structure
    # (degeneracy residuals must stay at round-off), an energy gradient that misses the chain
    # rule through log(q - lo) and log(hi - q) (gradcheck in float64 against finite differences),
    # a separable energy whose wall inputs leak the momentum into the potential (d2E/dq dp = 0),
    # and a model that does not save and load with its walls.
    import sp_dynamics as sp
    from sp_dynamics.nn import standardize_inputs

    torch.manual_seed(0)
    model = GENERICNet(4, separable=separable, walls=((0, 0.0, 2.0),)).double()
    x = _gas_like_states(64)
    assert standardize_inputs(model, x) >= 1
    widths = {m.in_features for m in model.energy_net.modules() if isinstance(m, torch.nn.Linear)}
    assert (5 if separable else 6) in widths  # the two log-distances are network inputs
    r_l, r_m = model.residuals(x)
    assert r_l.abs().max() < 1e-10 and r_m.abs().max() < 1e-10
    xs = x[:4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: model.energy(y), (xs,))
    if separable:
        H = torch.func.vmap(torch.func.hessian(lambda y: model.energy(y)))(x[:6])
        assert H[:, 0, 1].abs().max() < 1e-14 and H[:, 1, 2:].abs().max() < 1e-14
    sp.save(model, tmp_path / "m.pt")
    assert torch.equal(sp.load(tmp_path / "m.pt")(0.0, x), model(0.0, x))


def test_wall_inputs_reject_bad_walls_and_states_outside_them():
    # Catches: wall specifications that would build a network with NaN inputs or silently ignore
    # a coordinate, and data states beyond a wall reaching the standardisation as NaN statistics.
    from sp_dynamics.nn import standardize_inputs

    with pytest.raises(ValueError, match="lo < hi"):
        GENERICNet(4, walls=((0, 2.0, 0.0),))
    with pytest.raises(ValueError, match="not an index"):
        GENERICNet(4, walls=((4, 0.0, 2.0),))
    with pytest.raises(ValueError, match=r"\(coordinate, lo, hi\)"):
        GENERICNet(4, walls=((0, 2.0),))
    with pytest.raises(ValueError, match="twice"):
        GENERICNet(4, walls=((0, 0.0, 2.0), (0, 0.0, 1.0)))
    with pytest.raises(ValueError, match="momenta"):
        GENERICNet(4, separable=1, walls=((1, -1.0, 1.0),))
    with pytest.raises(ValueError, match="given energy"):
        GENERICNet(4, walls=((0, 0.0, 2.0),), energy=lambda y: y.sum(-1))
    model = GENERICNet(4, walls=((0, 0.0, 2.0),)).double()
    x = _gas_like_states(8)
    x[0, 0] = 2.5
    with pytest.raises(ValueError, match="outside the walls"):
        standardize_inputs(model, x)
