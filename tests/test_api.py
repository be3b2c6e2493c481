"""The public model API: standard nn.Module idioms and save/load work on every model."""

import json

import pytest
import torch

import sp_dynamics
from metriplector import MetriplecticLayer
from metriplector.maze import MazeSolver
from sp_dynamics import (GENERICNet, HamiltonianNN, LatentGENERICNet, LatentHamiltonianNN, PortHamiltonianNN,
                         ProjectionBracket)
from sp_dynamics.sequence import HamiltonianMemoryLayer, HMLStack
from sp_dynamics.modulation import ModulatedMLP

F64 = torch.float64


def _zoo():
    """(name, model factory, example input builder, call) for every model class users build."""
    x2, x3 = torch.randn(5, 2, dtype=F64), torch.randn(5, 3, dtype=F64)
    z = torch.randn(2, 4, dtype=F64)
    seq, tokens = torch.randn(2, 7, 3, dtype=F64), torch.randint(0, 6, (2, 7))
    image, maze = torch.randn(1, 4, 5, 5, dtype=F64), torch.randint(0, 4, (1, 5, 5))
    return [
        ("hnn", lambda: HamiltonianNN(2, hidden=8, depth=2), lambda m: m(0.0, x2)),
        ("hnn-separable", lambda: HamiltonianNN(2, hidden=8, depth=2, separable=True), lambda m: m(0.0, x2)),
        ("phnn", lambda: PortHamiltonianNN(2, hidden=8, depth=2, state_dependent_R=True), lambda m: m(0.0, x2)),
        ("generic-mixed", lambda: GENERICNet(3, hidden=8, depth=2), lambda m: m(0.0, x3)),
        ("generic-projection-sd", lambda: GENERICNet(3, bracket=ProjectionBracket(3, state_dependent=True), hidden=8,
                                                     depth=2), lambda m: m(0.0, x3)),
        ("generic-basis", lambda: GENERICNet(3, bracket="basis", hidden=8, depth=2), lambda m: m(0.0, x3)),
        ("generic-soft", lambda: GENERICNet(3, bracket="soft", hidden=8, depth=2), lambda m: m(0.0, x3)),
        ("latent-hnn", lambda: LatentHamiltonianNN(2, kind="svd", rank=2, latent_dim=4, hidden=8, depth=2,
                                                   hyper_hidden=8, energy_scale=3.0),
         lambda m: m(0.0, x2.expand(2, 5, 2), z)),
        ("latent-generic", lambda: LatentGENERICNet(3, kind="fw", latent_dim=4, hidden=8, depth=2, hyper_hidden=8),
         lambda m: m(0.0, x3.expand(2, 5, 3), z)),
        ("modulated-mlp", lambda: ModulatedMLP(3, 1, 8, 2, "tanh", "mr", 2, 4, 8), lambda m: m(x3.expand(2, 5, 3), z)),
        ("hml", lambda: HamiltonianMemoryLayer(3, 4, 2, mode="scan"), lambda m: m(seq)),
        ("hml-stack", lambda: HMLStack(6, 8, 4, n_layers=2, mode="loop"), lambda m: m(tokens)),
        ("metriplectic-layer", lambda: MetriplecticLayer(4, fields=2, substeps=1),
         lambda m: m(image)),
        ("maze", lambda: MazeSolver(embed=4, hidden=8, fields=2), lambda m: m(maze)),
    ]


ZOO = _zoo()


@pytest.mark.parametrize("name,factory,call", ZOO, ids=[z[0] for z in ZOO])
def test_module_idioms_work_on_every_model(name, factory, call):
    # Catches: methods named `apply` that shadowed nn.Module.apply (model.apply(init_fn) raised
    # TypeError on every model), and modules that break .to / .double / state_dict round trips.
    torch.manual_seed(0)
    model = factory()
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert type(model).__name__ in seen
    model = model.double()
    assert all(p.dtype == F64 for p in model.parameters())
    model = model.to(torch.float32).to(F64)
    torch.manual_seed(1)
    other = factory().double()
    other.load_state_dict(model.state_dict())
    out_a, out_b = call(model), call(other)
    out_a = out_a[0] if isinstance(out_a, tuple) else out_a
    out_b = out_b[0] if isinstance(out_b, tuple) else out_b
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize("name,factory,call", ZOO, ids=[z[0] for z in ZOO])
def test_save_and_load_rebuild_every_model_with_no_outside_knowledge(tmp_path, name, factory, call):
    # Catches: a model whose constructor settings (kind, rank, latent_dim, energy_scale, bracket
    # class) were not recorded, so a reload needed the user to know them; a dtype lost on reload.
    torch.manual_seed(0)
    model = factory().double()
    with torch.no_grad():  # move every weight off its initial value so a fresh init cannot pass
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sp_dynamics.save(model, tmp_path / name)
    loaded = sp_dynamics.load(tmp_path / name)
    assert type(loaded) is type(model)
    assert all(p.dtype == F64 for p in loaded.parameters())
    a, b = call(model), call(loaded)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    assert torch.equal(a, b)


def test_save_refuses_what_it_cannot_rebuild_and_load_names_bad_folders(tmp_path):
    known = GENERICNet(3, energy=lambda x: x.pow(2).sum(-1), hidden=8, depth=2)
    with pytest.raises(ValueError, match="energy"):
        sp_dynamics.save(known, tmp_path / "known")
    with pytest.raises(ValueError, match="not a saved sp-dynamics model"):
        sp_dynamics.load(tmp_path)
    path = sp_dynamics.save(HamiltonianNN(2, hidden=8, depth=1), tmp_path / "hnn")
    description = json.loads((path / "model.json").read_text())
    description["format_version"] = 99
    (path / "model.json").write_text(json.dumps(description))
    # Catches: a folder from an incompatible version loading into garbage or a deep torch error.
    with pytest.raises(ValueError, match="format 99"):
        sp_dynamics.load(path)
    description["format_version"] = 1
    description["config"]["hidden"] = 16
    (path / "model.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match="do not fit"):
        sp_dynamics.load(path)


def test_library_trainers_leave_the_global_rng_alone():
    # Catches: library functions that reseed torch's global RNG (a caller's own random stream
    # would silently restart from the library's seed).
    from sp_dynamics import make_family_dataset
    from sp_dynamics.meta import GradientMetaConfig, MetaConfig, meta_train, train_maml
    from sp_dynamics.nn import MLP

    d = make_family_dataset("mass_spring", seed=0, n_instances=5, n_train=4, n_traj=2, n_points=11)
    x, dx = d.x[:4].reshape(4, -1, 2), d.dx[:4].reshape(4, -1, 2)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    model = LatentHamiltonianNN(2, kind="svd", rank=2, latent_dim=3, hidden=8, depth=1, hyper_hidden=8).double()
    net = MLP(2, 1, hidden=8, depth=1).double()
    after_init = torch.get_rng_state()  # building the models draws from the global RNG, as torch does
    meta_train(model, x, dx, config=MetaConfig(iterations=2, tasks_per_batch=2, points_per_task=8, restarts=2,
                                               restart_iterations=1, refine_evals=3, refine_points=8), progress=False)
    train_maml(net, x, dx,
               config=GradientMetaConfig(iterations=1, tasks_per_batch=2, support_points=4, query_points=4))
    assert torch.equal(torch.get_rng_state(), after_init) and not torch.equal(before, after_init)


def test_library_sources_name_no_issue_numbers():
    # Catches: docstrings and help texts that point at the project's issue tracker instead of
    # saying what they mean.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for pkg in ("sp_dynamics", "metriplector", "systems")
                 for p in (root / pkg).rglob("*.py") if re.search(r"\bissue\s+#?\d+", p.read_text(), re.I)]
    assert not offenders
