"""Latent modulation: zero modulation = base, merge = unmerged, SVD constraints, parameter
counts, and structure exact for every latent in the modulated Hamiltonian/GENERIC models."""

import pytest
import torch

from sp_dynamics import (
    MODULATIONS,
    GENERICNet,
    LatentGENERICNet,
    LatentHamiltonianNN,
    ModulatedMLP,
    gradient,
    integrate,
    orthogonality_penalty,
)
from sp_dynamics.nn import standardize_inputs

F64 = torch.float64
KINDS = [k for k in MODULATIONS if k != "none"]


def _net(kind, seed=0, **kw):
    torch.manual_seed(seed)
    net = ModulatedMLP(2, 1, hidden=16, depth=3, kind=kind, rank=3, latent_dim=4, hyper_hidden=16, **kw).double()
    return net


def _randomise_hyper(net):
    # heads start at zero (modulated == base at init); give them values to test the maps
    with torch.no_grad():
        for p in net.hyper.parameters():
            p.normal_(0.0, 0.3)
    return net


def _data(seed=0, K=3, N=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, N, 2, generator=g, dtype=F64), torch.randn(K, 4, generator=g, dtype=F64)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_modulation_equals_base(kind):
    # Catches: a modulation that perturbs the network even when it is zero (e.g. a stray bias or
    # an SVD term not multiplied by d) -- and heads that do not start at zero.
    net = _net(kind)
    x, z = _data()
    base = net.forward_modulated(x, {})
    if kind == "svd":  # singular values start at SVD_D_INIT > 0 (off ReLU's kink), the rest at zero
        assert torch.allclose(net(x, z), base, atol=1e-2) and not torch.equal(net(x, z), base)
    else:
        assert torch.equal(net(x, z), base)  # zero-initialised heads: modulated == base at init
    _randomise_hyper(net)
    zeros = {k: torch.zeros_like(v) for k, v in net.modulations(z).items()}
    assert torch.equal(net.forward_modulated(x, zeros), base)
    assert not torch.allclose(net(x, z), base)  # and a non-zero modulation does act


@pytest.mark.parametrize("kind", KINDS)
def test_every_hypernetwork_head_learns_from_init(kind):
    # Catches: a modulation that cannot start learning -- SVD's d = ReLU(head(z)) with the head
    # at exactly zero sits on the kink and gets zero gradient forever; MR/RO's U V^T with both
    # heads at zero is a saddle. Either way the method silently trains as Shift. After one
    # gradient step every head must be receiving gradient.
    net = _net(kind)
    x, z = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        net(x, z).pow(2).sum().backward()
        opt.step()
    out = net.hyper.out
    grad_rows = out.weight.grad.abs().sum(-1)
    offset = 0
    for name, size in net.hyper.sizes.items():
        assert grad_rows[offset:offset + size].sum() > 0, f"head {name} gets no gradient"
        offset += size


@pytest.mark.parametrize("kind", KINDS)
def test_merge_equals_unmerged(kind):
    # Catches: merge() folding a different modulation than forward() applies.
    net = _randomise_hyper(_net(kind))
    x, z = _data(1)
    for k in range(3):
        merged = net.merge(z[k])
        assert torch.allclose(merged(x[k]), net(x[k], z[k]), atol=1e-12)
        assert torch.allclose(merged(x[k]), net(x, z)[k], atol=1e-12)  # batched == single task


def test_svd_singular_values_nonnegative_and_orthogonality_penalty():
    # Catches: negative singular values (no ReLU) and a penalty that is not ||U^T U - I|| + ...
    net = _randomise_hyper(_net("svd"))
    _, z = _data(2)
    z = 10 * z
    raw, mods = net.hyper(z), net.modulations(z)
    d_keys = [k for k in mods if k.startswith("d")]
    assert d_keys == ["d0", "d1", "d2"]
    for k in d_keys:
        assert torch.equal(mods[k], raw[k].clamp_min(0)) and (mods[k] >= 0).all()
    assert any(bool((raw[k] < 0).any()) for k in d_keys)  # the clipping is exercised
    wide = ModulatedMLP(8, 1, hidden=16, depth=2, kind="svd", rank=3, latent_dim=4).double()
    assert orthogonality_penalty(wide) < 1e-5  # orthonormal at init (QR in float32), in, out >= rank
    with torch.no_grad():
        wide.u[0].mul_(2.0)
    expected = torch.linalg.matrix_norm(wide.u[0].T @ wide.u[0] - torch.eye(3, dtype=F64))
    assert torch.allclose(orthogonality_penalty(wide), expected)
    # rank above a layer's width cannot be orthonormal: the penalty says so
    assert orthogonality_penalty(_net("svd")) > 1.0
    assert orthogonality_penalty(_net("fw")) == 0


def test_parameter_counts():
    # Catches: miscounted parameter budgets in the tables (per-task = the latent only).
    counts = {k: _net(k).parameter_counts() for k in MODULATIONS}
    base = counts["none"]["base"]
    assert base == (2 * 16 + 16) + 2 * (16 * 16 + 16) + 17
    for k in ["fw", "shift", "ro", "mr"]:
        assert counts[k]["base"] == base and counts[k]["per_task"] == 4
    # FW: linear, bias-free hypernetwork emitting every weight and bias of the hidden layers
    assert counts["fw"]["hypernetwork"] == 4 * ((2 * 16 + 16) + 2 * (16 * 16 + 16))
    # SVD adds the shared bases u (out x r) and v (in x r) of each hidden layer to the base
    assert counts["svd"]["base"] == base + sum(o * 3 + i * 3 for i, o in [(2, 16), (16, 16), (16, 16)])
    # SVD's hypernetwork emits only r singular values and a shift per layer: the smallest
    assert counts["svd"]["hypernetwork"] < min(counts["mr"]["hypernetwork"], counts["fw"]["hypernetwork"])
    assert counts["none"]["hypernetwork"] == counts["none"]["per_task"] == 0


@pytest.mark.parametrize("kind", ["fw", "shift", "ro", "mr", "svd"])
def test_latent_hnn_conserves_energy_for_every_latent(kind):
    # Catches: modulation that breaks the Hamiltonian structure -- dH/dt = 0 must hold for any z.
    torch.manual_seed(0)
    model = LatentHamiltonianNN(2, kind=kind, rank=3, latent_dim=4, hidden=16).double()
    _randomise_hyper(model.energy_net)
    x, z = _data(3, K=4, N=32)
    f = model(0.0, x, z)
    dH = gradient(lambda y: model.energy(y, z), x)
    assert f.shape == x.shape
    assert (dH * f).sum(-1).abs().max() <= 1e-13
    merged = model.merge(z[1])
    assert torch.allclose(merged(0.0, x[1]), f[1], atol=1e-12)
    sys1 = model.condition(z[1])
    with torch.no_grad():
        # randomised hypernetworks make stiff energies: small substeps keep the iteration contracting
        xs = integrate(sys1, x[1, :4], torch.linspace(0, 0.1, 11, dtype=F64), method="discrete_gradient", step_size=0.005)
        E = sys1.energy(xs)
    assert (E - E[:, :1]).abs().max() <= 1e-12 * (1 + E[:, 0].abs().max())


def test_energy_scale_multiplies_the_energy_and_survives_merge():
    # Catches: an energy_scale applied to the field but not to energy() (discrete-gradient
    # rollouts and drift metrics would then use a different H), or dropped by merge().
    torch.manual_seed(0)
    plain = LatentHamiltonianNN(2, kind="svd", rank=3, latent_dim=4, hidden=16).double()
    scaled = LatentHamiltonianNN(2, kind="svd", rank=3, latent_dim=4, hidden=16, energy_scale=7.5).double()
    scaled.load_state_dict(plain.state_dict())
    _randomise_hyper(plain.energy_net)
    scaled.load_state_dict(plain.state_dict())
    x, z = _data(3, K=2, N=8)
    assert torch.allclose(scaled.energy(x, z), 7.5 * plain.energy(x, z), atol=1e-12)
    assert torch.allclose(scaled(0.0, x, z), 7.5 * plain(0.0, x, z), atol=1e-12)
    assert torch.allclose(scaled.merge(z[0])(0.0, x[0]), scaled(0.0, x, z)[0], atol=1e-12)
    with pytest.raises(ValueError, match="energy_scale must be a positive"):
        LatentHamiltonianNN(2, energy_scale=0.0)


@pytest.mark.parametrize("bracket", ["projection", "basis"])
def test_latent_generic_structure_for_every_latent(bracket):
    torch.manual_seed(1)
    model = LatentGENERICNet(3, bracket=bracket, kind="svd", rank=3, latent_dim=4, hidden=16).double()
    _randomise_hyper(model.energy_net)
    _randomise_hyper(model.entropy_net)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 32, 3, generator=g, dtype=F64)
    z = 3 * torch.randn(4, 4, generator=g, dtype=F64)
    dE, dS = model.gradients(x, z)
    f = model(0.0, x, z)
    assert ((dE * f).sum(-1).abs() / (dE.norm(dim=-1) * f.norm(dim=-1).max())).max() <= 1e-12
    assert (dS * f).sum(-1).min() >= -1e-14
    r_L, r_M = model.residuals(x, z)
    assert r_L.abs().max() <= 1e-10 * dS.abs().max() and r_M.abs().max() <= 1e-10 * dE.abs().max()
    assert torch.allclose(model.merge(z[2])(0.0, x[2]), f[2], atol=1e-12)


@pytest.mark.parametrize("bracket", ["mixed", "projection"])
def test_latent_entropy_gain_scales_only_the_dissipation(bracket):
    # Catches: an entropy gain that leaks into the reversible part L grad E (the mixed and projection
    # brackets' L must not change when S is rescaled, or a gas family's friction could not vary with
    # z without bending the mechanics), a gain that breaks the degeneracy conditions, one that is not
    # 1 at initialisation (training must start from the plain model), or one that merge() drops.
    torch.manual_seed(2)
    plain = LatentGENERICNet(4, bracket=bracket, kind="svd", rank=3, latent_dim=4, hidden=16).double()
    gained = LatentGENERICNet(4, bracket=bracket, kind="svd", rank=3, latent_dim=4, hidden=16, entropy_gain=True).double()
    gained.load_state_dict(plain.state_dict(), strict=False)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 16, 4, generator=g, dtype=F64)
    z = torch.randn(3, 4, generator=g, dtype=F64)
    assert torch.equal(gained(0.0, x, z), plain(0.0, x, z))  # zero-initialised gain: the plain model
    with torch.no_grad():
        gained.entropy_gain.weight.copy_(torch.randn(1, 4, generator=g, dtype=F64))
    c = gained.entropy_scale(z)                                                  # (3, 1)
    assert torch.allclose(gained.entropy(x, z), c * plain.entropy(x, z), atol=1e-12)
    dE, dS = plain.gradients(x, z)
    rev, irr = plain.bracket.terms(x, dE, dS)                     # L grad E, M grad S of the plain model
    rev_g, irr_g = gained.bracket.terms(x, *gained.gradients(x, z))
    assert torch.allclose(rev_g, rev, atol=1e-12)                 # the mechanics are untouched
    assert torch.allclose(irr_g, c.unsqueeze(-1) * irr, atol=1e-12)  # the dissipation is scaled by c
    dEg, dSg = gained.gradients(x, z)
    r_L, r_M = gained.residuals(x, z)
    assert r_L.abs().max() <= 1e-10 * dSg.abs().max() and r_M.abs().max() <= 1e-10 * dEg.abs().max()
    assert (dSg * gained(0.0, x, z)).sum(-1).min() >= -1e-14
    assert torch.allclose(gained.merge(z[1])(0.0, x[1]), gained(0.0, x, z)[1], atol=1e-12)


@pytest.mark.parametrize("kind", ["shift", "mr", "fw"])
def test_load_base_starts_every_latent_at_the_fitted_model(kind):
    # Catches: a warm start that copies the MLP layers in the wrong order, drops the head, the
    # bracket or the input standardisation (the fitted field would then not be reproduced), or
    # modulations that are not zero at initialisation (the latents would start elsewhere).
    torch.manual_seed(3)
    net = GENERICNet(4, friction_input="gradient", hidden=16).double()
    g = torch.Generator().manual_seed(6)
    data = 1.0 + torch.rand(64, 4, generator=g, dtype=F64)
    standardize_inputs(net, data)
    for p in net.parameters():  # a non-trivial "fitted" model: perturb every weight
        p.data.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    model = LatentGENERICNet(4, kind=kind, rank=2, latent_dim=4, hidden=16, friction_input="gradient",
                             entropy_gain=True).double()
    assert model.load_base(net) is model
    x = 1.0 + torch.rand(3, 10, 4, generator=g, dtype=F64)
    z = torch.randn(3, 4, generator=g, dtype=F64)
    assert torch.allclose(model(0.0, x, z), net(0.0, x), atol=1e-12)
    assert torch.allclose(model.energy(x, z), net.energy(x), atol=1e-12)


def test_load_base_bad_input():
    # Catches: a silent partial copy into a model of another shape or bracket.
    net = GENERICNet(4, hidden=16).double()
    with pytest.raises(ValueError, match="32 hidden units"):
        LatentGENERICNet(4, hidden=32).double().load_base(net)
    with pytest.raises(ValueError, match="bracket BasisBracket does not match"):
        LatentGENERICNet(4, bracket="projection", hidden=16).double().load_base(GENERICNet(4, bracket="basis", hidden=16))
    target = LatentGENERICNet(4, hidden=16, friction_input="gradient", friction_law="power").double()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="brackets' settings differ"):
        target.load_base(net)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-copied
    with pytest.raises(ValueError, match="needs a GENERICNet of dimension 4"):
        LatentGENERICNet(4, hidden=16).load_base(GENERICNet(3, hidden=16))


def test_bad_input():
    with pytest.raises(ValueError, match="unknown modulation"):
        ModulatedMLP(2, 1, kind="lora")
    net = _net("svd")
    x, z = _data()
    with pytest.raises(ValueError, match="latent must have shape"):
        net(x, z[:, :3])
    with pytest.raises(ValueError, match="needs a latent"):
        net(x)
    with pytest.raises(ValueError, match=r"x must be \(K, N, 2\)"):
        net(x[:2], z)
    with pytest.raises(ValueError, match="merge takes one latent"):
        net.merge(z)
