"""MAML meta-gradient via torch.func (batched over tasks) against an independent computation."""

import pytest
import torch

from sp_dynamics import gradient
from sp_dynamics.meta.maml import adapt_params, hnn_field, hnn_loss, maml_meta_gradient
from sp_dynamics.nn import MLP

F64 = torch.float64


def _setup(seed=0, K=3, N=6):
    torch.manual_seed(seed)
    net = MLP(2, 1, hidden=8, depth=2).double()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(K, N, 2, generator=g, dtype=F64)  # noqa: E731
    return net, params, (mk(), mk()), (mk(), mk())


def _reference(net, params, support, query, lr, steps, trainable=None):
    """Plain autograd, one task at a time, create_graph through the inner loop: an independent
    second-order MAML computation (no torch.func)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    total = 0.0
    K = support[0].shape[0]
    for k in range(K):
        p = dict(leaves)
        for _ in range(steps):
            loss = _plain_loss(net, p, support[0][k], support[1][k])
            names = [n for n in p if trainable is None or trainable(n)]
            grads = torch.autograd.grad(loss, [p[n] for n in names], create_graph=True, allow_unused=True)
            p = {**p, **{n: p[n] - lr * (g if g is not None else 0) for n, g in zip(names, grads)}}
        total = total + _plain_loss(net, p, query[0][k], query[1][k]) / K
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(leaves[n])) for n, g in zip(leaves, grads)}


def _plain_loss(net, p, x, dx):
    energy = lambda y: torch.func.functional_call(net, p, (y,)).squeeze(-1)  # noqa: E731
    dH = gradient(energy, x)
    f = torch.cat([dH[:, 1:], -dH[:, :1]], -1)
    return (f - dx).pow(2).sum(-1).mean()


def test_functional_field_matches_autograd_hnn():
    net, params, (xs, _), _ = _setup()
    energy = lambda y: net(y).squeeze(-1)  # noqa: E731
    dH = gradient(energy, xs[0])
    assert torch.allclose(hnn_field(net, params, xs[0]), torch.cat([dH[:, 1:], -dH[:, :1]], -1), atol=1e-14)


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_independent_computation(steps):
    # Catches: a meta-gradient that silently drops second-order terms, mixes tasks in vmap, or
    # averages wrongly -- compared with a plain-autograd, task-by-task computation.
    net, params, support, query = _setup()
    ours, _ = maml_meta_gradient(net, params, support, query, inner_lr=0.05, inner_steps=steps)
    ref = _reference(net, params, support, query, 0.05, steps)
    for name in params:
        assert torch.allclose(ours[name], ref[name], rtol=1e-9, atol=1e-12), name


def test_first_order_differs_from_second_order():
    # The second-order terms matter: FOMAML's gradient is measurably different.
    net, params, support, query = _setup(1)
    so, _ = maml_meta_gradient(net, params, support, query, inner_lr=0.1, inner_steps=1)
    fo, _ = maml_meta_gradient(net, params, support, query, inner_lr=0.1, inner_steps=1, first_order=True)
    diff = max(float((so[n] - fo[n]).abs().max() / so[n].abs().max().clamp_min(1e-30)) for n in params)
    assert diff > 1e-3


def test_anil_adapts_only_the_last_layer():
    net, params, support, query = _setup(2)
    last = lambda name: name.startswith(str(len(net) - 1) + ".")  # noqa: E731
    adapted = adapt_params(net, params, support[0][0], support[1][0], 0.1, 1, trainable=last)
    for name in params:
        changed = not torch.equal(adapted[name], params[name])
        if last(name) and name.endswith("weight"):
            assert changed, name
        else:  # earlier layers are frozen; the output bias has no effect on grad H (zero gradient)
            assert not changed, name
    ours, _ = maml_meta_gradient(net, params, support, query, 0.05, 1, trainable=last)
    ref = _reference(net, params, support, query, 0.05, 1, trainable=last)
    for name in params:
        assert torch.allclose(ours[name], ref[name], rtol=1e-9, atol=1e-12), name


def test_higher_cross_check_when_available():
    higher = pytest.importorskip("higher", reason="optional cross-check: pip install higher")
    net, params, support, query = _setup(3)
    ours, _ = maml_meta_gradient(net, params, support, query, inner_lr=0.05, inner_steps=1)
    net.load_state_dict(params)
    inner = torch.optim.SGD(net.parameters(), lr=0.05)
    net.zero_grad()
    K = support[0].shape[0]
    for k in range(K):
        with higher.innerloop_ctx(net, inner, copy_initial_weights=False) as (fnet, diffopt):
            f = lambda y: fnet(y).squeeze(-1)  # noqa: E731
            loss = _hnn(f, support[0][k], support[1][k])
            diffopt.step(loss)
            (_hnn(f, query[0][k], query[1][k]) / K).backward()
    for name, p in net.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)  # the output bias gets none
        assert torch.allclose(g, ours[name], rtol=1e-9, atol=1e-12), name


def _hnn(energy, x, dx):
    dH = gradient(energy, x)
    return (torch.cat([dH[:, 1:], -dH[:, :1]], -1) - dx).pow(2).sum(-1).mean()


def test_bad_input():
    net, params, support, query = _setup()
    with pytest.raises(ValueError, match="same number of tasks"):
        maml_meta_gradient(net, params, support, (query[0][:2], query[1][:2]), 0.1)
    assert hnn_loss(net, params, support[0][0], support[1][0]) > 0


def _generic_setup(seed=0, K=2, N=5):
    from sp_dynamics import GENERICNet

    torch.manual_seed(seed)
    net = GENERICNet(3, bracket="projection", hidden=8, depth=2).double()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(K, N, 3, generator=g, dtype=F64)  # noqa: E731
    return net, params, (mk(), mk()), (mk(), mk())


def test_generic_functional_field_matches_the_module_and_keeps_the_structure():
    # Catches: the functional GENERIC field drifting from GENERICNet.forward (e.g. E and S
    # parameters swapped, or the bracket applied to the wrong gradients), which would make the
    # GENERIC MAML/ANIL/Reptile/Scratch baselines train a different model than the one evaluated.
    from sp_dynamics.meta.maml import generic_field

    net, params, (xs, _), _ = _generic_setup()
    x = xs[0]
    assert torch.allclose(generic_field(net, params, x), net(0.0, x), atol=1e-13)
    # at perturbed (adapted-like) parameters the bracket still gives dE/dt = 0 and dS/dt >= 0
    moved = {k: v + 0.3 * torch.randn_like(v) for k, v in params.items()}
    f = generic_field(net, moved, x)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(moved[name])
    dE, dS = net.gradients(x)
    assert ((dE * f).sum(-1).abs() <= 1e-12 * (dE.norm(dim=-1) * f.norm(dim=-1) + 1e-300)).all()
    assert ((dS * f).sum(-1) >= -1e-12).all()


def test_generic_meta_gradient_matches_task_by_task_autograd():
    # Catches: the field= argument not reaching the inner loop (the meta-gradient would then be
    # an HNN's) or tasks mixed by vmap for GENERIC networks.
    from sp_dynamics.meta.maml import generic_field

    net, params, support, query = _generic_setup()
    ours, _ = maml_meta_gradient(net, params, support, query, inner_lr=0.05, inner_steps=1, field=generic_field)

    def plain(p, x, dx):
        dE = gradient(lambda y: torch.func.functional_call(net.energy_net, {k[11:]: v for k, v in p.items() if k.startswith("energy_net.")}, (y,)), x)
        dS = gradient(lambda y: torch.func.functional_call(net.entropy_net, {k[12:]: v for k, v in p.items() if k.startswith("entropy_net.")}, (y,)), x)
        f = torch.func.functional_call(net.bracket, {k[8:]: v for k, v in p.items() if k.startswith("bracket.")}, (x, dE, dS))
        return (f - dx).pow(2).sum(-1).mean()

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    total = 0.0
    for k in range(support[0].shape[0]):
        loss = plain(leaves, support[0][k], support[1][k])
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        adapted = {n: v - 0.05 * (g if g is not None else 0) for (n, v), g in zip(leaves.items(), grads)}
        total = total + plain(adapted, query[0][k], query[1][k]) / support[0].shape[0]
    ref = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    for (name, g_ours), g_ref in zip(ours.items(), ref):
        g_ref = torch.zeros_like(g_ours) if g_ref is None else g_ref
        assert torch.allclose(g_ours, g_ref, atol=1e-10, rtol=1e-8), name
