import os

import pytest
import torch

import systems  # noqa: F401  (registers the built-in systems)
from sp_dynamics import list_systems

torch.set_num_threads(1)  # tiny tensors: threading only adds overhead (and xdist runs 2 workers)

BUILTIN = ["pendulum", "mass_spring", "duffing", "dno", "gas_containers"]
GENERIC = ["dno", "gas_containers"]
HAMILTONIAN = ["pendulum", "mass_spring", "duffing"]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    # Tests never touch the user's dataset cache.
    monkeypatch.setenv("SP_DYNAMICS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def all_system_names():
    return sorted(set(BUILTIN) | set(list_systems()))


def system_states(system, mu, n, gen):
    """n valid float64 states of a system instance: initial states, perturbed."""
    x = system.sample_initial_states(mu, n, gen)
    return x


def pytest_report_header(config):
    return f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP={os.environ.get('OMP_NUM_THREADS')}"


def make_part_predate_settings(path) -> None:
    """Rewrite a results part's ``.config.json`` as if it had been written before the settings
    ``entropy_gain`` (top level) and ``warm_start_fit.free_starts`` (nested) existed."""
    import json

    stored = json.loads(path.read_text())
    del stored["config"]["warm_start_fit"]["free_starts"], stored["config"]["entropy_gain"]
    path.write_text(json.dumps(stored))


def set_part_setting(path, key: str, value) -> None:
    """Set a top-level setting in a results part's ``.config.json``."""
    import json

    stored = json.loads(path.read_text())
    stored["config"][key] = value
    path.write_text(json.dumps(stored))
