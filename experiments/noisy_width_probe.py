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


def main(hidden: int, method: str) -> None:
    if method not in ("spline", "savgol", "derivatives"):
        sys.exit("usage: noisy_width_probe.py HIDDEN spline|savgol|derivatives")
    torch.set_num_threads(1)
    clean = make_family_dataset("dno", seed=0)
    data = make_family_dataset("dno", seed=0, noise_std=0.01)
    i = 70
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=hidden).double()
    if method == "derivatives":
        x, dx = data.pairs(i)
    elif method == "savgol":
        from scipy.signal import savgol_filter

        h = float(data.t[1] - data.t[0])
        x = torch.as_tensor(savgol_filter(data.x[i].numpy(), 15, 3, axis=1)).reshape(-1, 3)
        dx = torch.as_tensor(savgol_filter(data.x[i].numpy(), 15, 3, deriv=1, delta=h, axis=1)).reshape(-1, 3)
    else:
        x, dx = estimate_derivatives(data.t, data.x[i], "smoothing_spline")
    result = fit(model, x, dx, config=FitConfig(), progress=False)
    pred = safe_rollout(model, clean.x[i, :, 0], clean.t)
    print(hidden, method, "params", sum(p.numel() for p in model.parameters()), f"loss {result.final_loss:.3e}",
          f"eps_traj {float(eps_traj(pred, clean.x[i]).mean()):.3e}", f"{result.seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
