"""Probe: does a smaller network lower the error of a fit from noisy DNO states?

    python experiments/noisy_width_probe.py HIDDEN METHOD        # METHOD: spline, savgol or derivatives

One fit of DNO test instance 70 at noise_std 0.01 (seed 0, ``sp_dynamics.fit`` defaults,
``GENERICNet(3, hidden=HIDDEN)`` with the mixed bracket, float64, 1 thread), from smoothing-spline
derivatives of the noisy states (``spline``), from a Savitzky-Golay filter's states and
derivatives (``savgol``: cubic over 15 samples, the window and order with the lowest derivative
error against the *true* derivatives among 9-31 samples and orders 3 and 5, so an optimistic
oracle choice) or from the dataset's noisy derivatives (``derivatives``); prints the parameter
count, final loss, eps_traj against the clean trajectories and the fit time. The question: is the
states-only error (about 1.6e-2 against 6.1e-3 for derivative matching at the same noise, PROTOCOL
"Learning from trajectories without derivatives") the variance of an over-parameterised estimate,
which fewer parameters would cut?
"""

import sys

import torch

from sp_dynamics import GENERICNet
from sp_dynamics.data import make_family_dataset
from sp_dynamics.derivatives import estimate_derivatives
from sp_dynamics.fitting import FitConfig, fit
from sp_dynamics.meta.evaluation import safe_rollout
from sp_dynamics.metrics import eps_traj

INSTANCE = 70


def noisy_and_clean():
    """The DNO dataset (protocol v1, seed 0) at noise_std 0.01 and without noise."""
    return make_family_dataset("dno", seed=0, noise_std=0.01), make_family_dataset("dno", seed=0)


def savgol(t, x, window: int = 15, order: int = 3):
    """Savitzky-Golay states and derivatives of trajectories x (J, T, n) sampled at the uniform times t."""
    from scipy.signal import savgol_filter

    h = float(t[1] - t[0])
    return (torch.as_tensor(savgol_filter(x.numpy(), window, order, axis=-2)),
            torch.as_tensor(savgol_filter(x.numpy(), window, order, deriv=1, delta=h, axis=-2)))


def clean_eps_traj(model, clean, i: int = INSTANCE) -> float:
    """eps_traj of dopri5 rollouts from the clean initial states against the clean trajectories."""
    return float(eps_traj(safe_rollout(model, clean.x[i, :, 0], clean.t), clean.x[i]).mean())


def main(hidden: int, method: str) -> None:
    if method not in ("spline", "savgol", "derivatives"):
        sys.exit("usage: noisy_width_probe.py HIDDEN spline|savgol|derivatives")
    torch.set_num_threads(1)
    data, clean = noisy_and_clean()
    i = INSTANCE
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=hidden).double()
    if method == "derivatives":
        x, dx = data.pairs(i)
    elif method == "savgol":
        x, dx = (v.reshape(-1, 3) for v in savgol(data.t, data.x[i]))
    else:
        x, dx = estimate_derivatives(data.t, data.x[i], "smoothing_spline")
    result = fit(model, x, dx, config=FitConfig(), progress=False)
    print(hidden, method, "params", sum(p.numel() for p in model.parameters()), f"loss {result.final_loss:.3e}",
          f"eps_traj {clean_eps_traj(model, clean):.3e}", f"{result.seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
