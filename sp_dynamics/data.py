"""Family datasets (protocol v1) with on-disk caching and K-shot sampling.

Protocol v1 (``experiments/PROTOCOL.md``): 80 parameter instances per system (0-69 train,
70-79 test), 10 trajectories each on t in [0, t_end] (101 points), integrated in float64 with
batched dopri5 at rtol = atol = 1e-10 (max-norm error control, so every trajectory meets the
tolerance, not only their average); targets are the analytic time derivatives at the stored
states. Datasets are cached keyed by (system, protocol version, seed, settings).

Shapes: ``params`` (I, P); ``t`` (T,); ``x``, ``dx`` (I, J, T, n) with I instances,
J trajectories per instance, T time points, n the state dimension.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchdiffeq
from torch import Tensor

from ._checks import check_finite
from .io import atomic_save, safe_load
from .registry import get_system
from .system import System

__all__ = ["DatasetConfig", "FamilyDataset", "make_family_dataset", "load_trajectories", "save_trajectories",
           "default_cache_dir", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = "v1"
_FORMAT = 1


def default_cache_dir() -> Path:
    """``$SP_DYNAMICS_CACHE`` or ``~/.cache/sp_dynamics``."""
    return Path(os.environ.get("SP_DYNAMICS_CACHE", Path.home() / ".cache" / "sp_dynamics"))


@dataclass(frozen=True)
class DatasetConfig:
    """Settings of a family dataset; the defaults are protocol v1."""

    n_instances: int = 80
    n_train: int = 70
    n_traj: int = 10
    t_end: float | None = None  # None: the system's own horizon
    n_points: int = 101
    rtol: float = 1e-10
    atol: float = 1e-10
    noise_std: float = 0.0

    def validate(self) -> None:
        if not 0 < self.n_train < self.n_instances:
            raise ValueError(f"need 0 < n_train < n_instances, got {self.n_train} and {self.n_instances}")
        if self.n_traj < 1 or self.n_points < 2:
            raise ValueError(f"need n_traj >= 1 and n_points >= 2, got {self.n_traj}, {self.n_points}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.t_end is not None and not self.t_end > 0:
            raise ValueError(f"t_end must be positive, got {self.t_end}")


@dataclass
class FamilyDataset:
    """Trajectories of a parameter family of one system."""

    system: str
    seed: int
    config: DatasetConfig
    params: Tensor
    t: Tensor
    x: Tensor
    dx: Tensor

    @property
    def train_ids(self) -> list[int]:
        return list(range(self.config.n_train))

    @property
    def test_ids(self) -> list[int]:
        return list(range(self.config.n_train, self.config.n_instances))

    @property
    def dim(self) -> int:
        return self.x.shape[-1]

    def pairs(self, instance: int) -> tuple[Tensor, Tensor]:
        """All (x, dx) pairs of one instance, each (J*T, n)."""
        self._check_instance(instance)
        return self.x[instance].reshape(-1, self.dim), self.dx[instance].reshape(-1, self.dim)

    def sample_shots(self, instance: int, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """K-shot subset: ``k`` distinct (x, dx) pairs drawn uniformly from one instance's
        trajectories, each (k, n). Seeded through ``generator``."""
        x, dx = self.pairs(instance)
        if not 1 <= k <= len(x):
            raise ValueError(f"k must be in [1, {len(x)}] for this dataset, got {k}")
        idx = torch.randperm(len(x), generator=generator)[:k]
        return x[idx], dx[idx]

    def with_estimated_derivatives(self, method: str = "smoothing_spline") -> "FamilyDataset":
        """This dataset with ``dx`` replaced by derivatives estimated from the sampled states alone
        (:func:`~sp_dynamics.estimate_derivatives`): what a user with measured trajectories has.
        ``"midpoint"`` replaces the states by interval midpoints (T - 1 of them, at the midpoint
        times); the spline methods keep T states (``"smoothing_spline"`` smooths them too)."""
        from .derivatives import estimate_derivatives

        x, dx = estimate_derivatives(self.t, self.x, method)
        t = 0.5 * (self.t[1:] + self.t[:-1]) if method == "midpoint" else self.t.clone()
        return FamilyDataset(self.system, self.seed, self.config, self.params, t, x, dx)

    @classmethod
    def from_trajectories(cls, t, x, *, params=None, dx=None, derivatives: str = "smoothing_spline",
                          n_train: int | None = None, system: str = "custom", seed: int = 0) -> "FamilyDataset":
        """A dataset from trajectories a user integrated or measured.

        Args:
            t: sampling times (T,), strictly increasing.
            x: states (instances, trajectories, T, n); a 3-D array is one instance.
            params: optional parameters per instance (instances, P); NaN (unknown) if omitted.
            dx: time derivatives of the same shape as x, if known; otherwise they are estimated
                with ``derivatives`` (see :func:`~sp_dynamics.estimate_derivatives`;
                ``"midpoint"`` turns the states into interval midpoints).
            n_train: instances 0..n_train-1 are training, the rest test (default: all but the
                last one; all of them when there is only one).
            system, seed: recorded names (``system`` need not be registered).

        NumPy arrays and tensors are accepted; everything is stored in float64.
        """
        from .derivatives import estimate_derivatives

        t = torch.as_tensor(t, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim == 3:
            x = x.unsqueeze(0)
            dx = None if dx is None else torch.as_tensor(dx, dtype=torch.float64).unsqueeze(0)
        if x.ndim != 4 or t.ndim != 1 or x.shape[2] != t.shape[0]:
            raise ValueError(f"trajectories must be (instances, trajectories, T, n) with times (T,), "
                             f"got {tuple(x.shape)} and {tuple(t.shape)}")
        check_finite(x, "trajectories x")
        check_finite(t, "times t")
        if t.shape[0] < 2 or not bool((t[1:] > t[:-1]).all()):
            raise ValueError("times t must be strictly increasing, with at least two samples")
        I = x.shape[0]
        if dx is None:
            x, dx = estimate_derivatives(t, x, derivatives)
            if derivatives == "midpoint":
                t = 0.5 * (t[1:] + t[:-1])
        else:
            dx = torch.as_tensor(dx, dtype=torch.float64)
            if dx.shape != x.shape:
                raise ValueError(f"dx must have the shape of x {tuple(x.shape)}, got {tuple(dx.shape)}")
            check_finite(dx, "derivatives dx")
        if params is None:
            params = torch.full((I, 0), float("nan"), dtype=torch.float64)
        params = torch.as_tensor(params, dtype=torch.float64).reshape(I, -1)
        n_train = (I - 1 if I > 1 else 1) if n_train is None else int(n_train)
        if not 1 <= n_train <= I:
            raise ValueError(f"n_train must be in [1, {I}] for {I} instances, got {n_train}")
        config = DatasetConfig(n_instances=I, n_train=n_train, n_traj=x.shape[1], t_end=float(t[-1] - t[0]) or None,
                               n_points=x.shape[2])
        return cls(system, seed, config, params, t, x, dx)

    def _check_instance(self, i: int) -> None:
        if not 0 <= i < self.config.n_instances:
            raise ValueError(f"instance index must be in [0, {self.config.n_instances}), got {i}")

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "system": self.system,
            "seed": self.seed,
            "protocol": PROTOCOL_VERSION,
            "config": dataclasses.asdict(self.config),
            "params": self.params,
            "t": self.t,
            "x": self.x,
            "dx": self.dx,
        }


def _cache_path(cache_dir: Path, system: System, seed: int, config: DatasetConfig) -> Path:
    # The key holds the system's definition (class attributes and source digest), not only its
    # name: re-registering a changed system under the same name must not return the old data.
    settings = json.dumps({"config": dataclasses.asdict(config), "system": system.definition()}, sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
    return cache_dir / f"{system.name}-{PROTOCOL_VERSION}-seed{seed}-{digest}.pt"


def _generate(system: System, seed: int, config: DatasetConfig) -> FamilyDataset:
    g = torch.Generator().manual_seed(seed)
    params = system.sample_params(config.n_instances, g)
    x0 = torch.stack([system.sample_initial_states(mu, config.n_traj, g) for mu in params])  # (I, J, n)
    system.check_state(x0)
    t_end = config.t_end if config.t_end is not None else system.t_end
    t = torch.linspace(0.0, t_end, config.n_points, dtype=torch.float64)
    mu = params[:, None, :]  # broadcast over trajectories

    # Max-norm error control: torchdiffeq's default RMS norm would average the error over all
    # I*J trajectories and let individual ones miss the tolerance.
    xs = torchdiffeq.odeint(
        lambda _t, x: system.f(mu, x),
        x0,
        t,
        rtol=config.rtol,
        atol=config.atol,
        method="dopri5",
        options={"norm": lambda e: e.abs().max()},
    )  # (T, I, J, n)
    x = xs.permute(1, 2, 0, 3).contiguous()
    dx = system.f(params[:, None, None, :], x)
    check_finite(x, f"{system.name} trajectories")
    if config.noise_std > 0:
        gn = torch.Generator().manual_seed(seed + 1_000_003)  # noise stream independent of the data
        x = x + config.noise_std * torch.randn(x.shape, generator=gn, dtype=x.dtype)
        dx = dx + config.noise_std * torch.randn(dx.shape, generator=gn, dtype=dx.dtype)
    return FamilyDataset(system.name, seed, config, params, t, x, dx)


def make_family_dataset(
    system: str | System,
    seed: int = 0,
    config: DatasetConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    **overrides,
) -> FamilyDataset:
    """Protocol-v1 dataset of a system family, loaded from the cache or generated (and cached).

    Args:
        system: a registered name or a :class:`System`.
        seed: seeds parameters and initial states; the same seed gives the same data.
        config: settings (default protocol v1); keyword ``overrides`` replace single fields,
            e.g. ``make_family_dataset("pendulum", n_instances=8, n_train=6)``.
        cache_dir: default :func:`default_cache_dir`. use_cache: read and write the cache.

    Example::

        data = make_family_dataset("pendulum", seed=0)
        data.x.shape                   # (80, 10, 101, 2)
        xk, dxk = data.sample_shots(data.test_ids[0], k=50, generator=torch.Generator().manual_seed(0))
    """
    system = get_system(system)
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(DatasetConfig)}
        if unknown:
            raise ValueError(f"unknown dataset setting(s) {sorted(unknown)}")
    config = dataclasses.replace(config or DatasetConfig(), **overrides)
    config.validate()
    path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), system, seed, config)
    if use_cache and path.exists():
        try:
            blob = safe_load(path, "dataset cache")
            if blob.get("format") == _FORMAT and blob.get("config") == dataclasses.asdict(config):
                return FamilyDataset(system.name, seed, config, blob["params"], blob["t"], blob["x"], blob["dx"])
            warnings.warn(f"dataset cache {path} does not match the requested settings; regenerating")
        except ValueError as exc:
            warnings.warn(f"{exc}; regenerating the dataset")
    data = _generate(system, seed, config)
    if use_cache:
        atomic_save(data.to_dict(), path)
    return data


def save_trajectories(path: str | os.PathLike, t, x, dx=None, params=None) -> Path:
    """Write trajectories in the ``.npz`` layout :func:`load_trajectories` reads (atomically):
    ``t`` (T,), ``x`` (instances, trajectories, T, n), optional ``dx`` and ``params``."""
    import numpy as np

    from .io import atomic_savez

    arrays = {"t": np.asarray(t, dtype=np.float64), "x": np.asarray(x, dtype=np.float64)}
    if dx is not None:
        arrays["dx"] = np.asarray(dx, dtype=np.float64)
    if params is not None:
        arrays["params"] = np.asarray(params, dtype=np.float64)
    return atomic_savez(path, **arrays)


def load_trajectories(path: str | os.PathLike, *, derivatives: str = "smoothing_spline",
                      n_train: int | None = None, system: str = "custom") -> FamilyDataset:
    """Read a user's trajectories from ``.npz`` or ``.csv`` into a :class:`FamilyDataset`.

    * ``.npz``: arrays ``t`` (T,) and ``x`` (instances, trajectories, T, n) or (trajectories, T, n);
      optional ``dx`` (same shape as ``x``) and ``params`` (instances, P).
    * ``.csv``: a header line, then one row per sample with columns ``instance, trajectory, t,
      x0 .. x{n-1}`` and optionally ``dx0 .. dx{n-1}``; every trajectory must be sampled at the
      same times.

    Without ``dx`` the derivatives are estimated from the states (``derivatives``, see
    :func:`~sp_dynamics.estimate_derivatives`). Raises ``ValueError`` naming the file and the
    problem (missing key or column, ragged sampling, NaN, wrong shapes).
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {str(path)!r}")
    where = f"data file {str(path)!r}"
    if path.suffix == ".npz":
        try:
            blob = np.load(path, allow_pickle=False)
        except Exception as exc:  # zipfile and format errors alike
            raise ValueError(f"{where} is not a readable .npz file ({type(exc).__name__})") from None
        missing = {"t", "x"} - set(blob.files)
        if missing:
            raise ValueError(f"{where} lacks the array(s) {sorted(missing)} (needs t and x; optional dx, params)")
        t, x = blob["t"], blob["x"]
        dx = blob["dx"] if "dx" in blob.files else None
        params = blob["params"] if "params" in blob.files else None
    elif path.suffix == ".csv":
        t, x, dx = _read_csv(path, where)
        params = None
    else:
        raise ValueError(f"{where}: unknown format {path.suffix!r} (use .npz or .csv)")
    try:
        return FamilyDataset.from_trajectories(t, x, dx=dx, params=params, derivatives=derivatives,
                                               n_train=n_train, system=system)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _read_csv(path: Path, where: str):
    import csv

    import numpy as np

    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        rows = [r for r in reader if r]
    if header[:3] != ["instance", "trajectory", "t"]:
        raise ValueError(f"{where}: the header must start with instance,trajectory,t then x0,x1,... (got {header[:3]})")
    xs = [h for h in header[3:] if h.startswith("x")]
    dxs = [h for h in header[3:] if h.startswith("dx")]
    n = len(xs)
    if n == 0 or xs != [f"x{i}" for i in range(n)] or dxs not in ([], [f"dx{i}" for i in range(n)]):
        raise ValueError(f"{where}: state columns must be x0..x{{n-1}}, optionally followed by dx0..dx{{n-1}}")
    try:
        table = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{where}: every value must be a number") from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise ValueError(f"{where}: every row needs {len(header)} values")
    inst, traj = table[:, 0].astype(int), table[:, 1].astype(int)
    I, J = inst.max() + 1, traj.max() + 1
    order = np.lexsort((table[:, 2], traj, inst))
    table = table[order]
    T = len(table) // (I * J) if I * J else 0
    if T * I * J != len(table):
        raise ValueError(f"{where}: every (instance, trajectory) needs the same number of samples")
    block = table.reshape(I, J, T, -1)
    t = block[0, 0, :, 2]
    if not np.allclose(block[..., 2], t):
        raise ValueError(f"{where}: every trajectory must be sampled at the same times")
    x = block[..., 3:3 + n]
    dx = block[..., 3 + n:3 + 2 * n] if dxs else None
    return t, x, dx
