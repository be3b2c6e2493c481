"""MAML, ANIL, Reptile and Scratch baselines on a tiny mass-spring family."""

import math

import torch

from sp_dynamics import make_family_dataset
from sp_dynamics.meta.baselines import (
    GradientMetaConfig,
    adapt_all,
    batched_field,
    last_layer,
    train_maml,
    train_reptile,
    train_scratch,
)
from sp_dynamics.meta.maml import hnn_loss
from sp_dynamics.nn import MLP

F64 = torch.float64
CFG = GradientMetaConfig(iterations=30, tasks_per_batch=4, support_points=32, query_points=32, outer_lr=3e-3,
                         inner_lr=1e-2)


def _family():
    d = make_family_dataset("mass_spring", seed=0, n_instances=8, n_train=6, n_traj=2)
    tr = d.train_ids
    return d, d.x[tr].reshape(len(tr), -1, 2), d.dx[tr].reshape(len(tr), -1, 2)


def _net():
    torch.manual_seed(0)
    return MLP(2, 1, hidden=16, depth=2).double()


def _query_loss(net, params, xq, dxq):
    return torch.func.vmap(lambda a, b: hnn_loss(net, params, a, b))(xq, dxq).mean()


def test_maml_and_anil_reduce_the_meta_loss():
    _, x, dx = _family()
    for anil in (False, True):
        net = _net()
        params, log = train_maml(net, x, dx, config=CFG, anil=anil)
        assert not log[-1]["diverged"] and len(log) == CFG.iterations
        first = sum(r["loss"] for r in log[:5]) / 5
        last = sum(r["loss"] for r in log[-5:]) / 5
        assert last < first, (anil, first, last)


def test_reptile_moves_towards_adapted_parameters():
    _, x, dx = _family()
    net = _net()
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    params, log = train_reptile(net, x, dx, config=CFG)
    assert not log[-1]["diverged"]
    assert _query_loss(net, params, x[:, :64], dx[:, :64]) < _query_loss(net, start, x[:, :64], dx[:, :64])


def test_adaptation_and_scratch_lower_the_support_loss():
    d, x, dx = _family()
    net = _net()
    params = {k: v.detach() for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(0)
    shots = [d.sample_shots(i, 20, g) for i in d.test_ids]
    xs, dxs = torch.stack([s[0] for s in shots]), torch.stack([s[1] for s in shots])
    adapted = adapt_all(net, params, xs, dxs, lr=1e-2, steps=20)
    f = batched_field(net, adapted, xs)
    before = torch.func.vmap(lambda a, b: hnn_loss(net, params, a, b))(xs, dxs)
    after = (f - dxs).pow(2).sum(-1).mean(-1)
    assert (after < before).all()
    anil = adapt_all(net, params, xs, dxs, lr=1e-2, steps=5, trainable=last_layer(net))
    assert torch.equal(anil["0.weight"][0], params["0.weight"])  # ANIL leaves the body alone
    from sp_dynamics import FitConfig

    task_params, results = train_scratch(lambda: MLP(2, 1, hidden=16, depth=2).double(), xs, dxs,
                                         config=FitConfig(max_iter=30, restarts=1, chunk=10))
    assert task_params["0.weight"].shape[0] == len(xs)
    assert all(r.losses[-1] < 0.5 * r.losses[0] for r in results)


def test_support_and_query_must_fit():
    import pytest

    _, x, dx = _family()
    too_many = GradientMetaConfig(iterations=1, support_points=200, query_points=200)
    with pytest.raises(ValueError, match="exceed"):
        train_maml(_net(), x, dx, config=too_many)


def test_divergence_is_recorded_not_raised():
    # A non-finite loss ends training and is reported (protocol: report NaN as it happens).
    _, x, dx = _family()
    nan_targets = torch.full_like(dx, float("nan"))
    _, log = train_reptile(_net(), x, nan_targets, config=CFG)
    assert len(log) == 1 and log[-1]["diverged"] and not math.isfinite(log[-1]["loss"])
    _, log = train_maml(_net(), x, nan_targets, config=CFG)
    assert len(log) == 1 and log[-1]["diverged"]


def test_batches_larger_than_the_family_are_refused():
    # Catches: tasks_per_batch larger than the number of systems being clipped silently.
    import pytest

    _, x, dx = _family()
    with pytest.raises(ValueError, match="tasks_per_batch"):
        train_maml(_net(), x, dx, config=GradientMetaConfig(iterations=1, tasks_per_batch=x.shape[0] + 1,
                                                            support_points=4, query_points=4))
