"""Probes of the noisy DNO fit (instance 70, noise_std 0.01): where does its error come from?

    python -m experiments.noisy_dno_probe exact [SEEDS]        # noisy states, exact derivatives
    python -m experiments.noisy_dno_probe ensemble [SEEDS]     # Savitzky-Golay fits, one per seed, and their mean field
    python -m experiments.noisy_dno_probe model_smooth [W]     # one round of smoothing around the fitted model's flow
    python -m experiments.noisy_dno_probe separable [SEEDS]    # the separable energy K(p) + U(q, S), three data sources
    python -m experiments.noisy_dno_probe information           # derivative matching as the derivative noise grows

Every fit is ``sp_dynamics.fit`` with its defaults on a fresh ``GENERICNet(3)`` (mixed bracket,
float64, one thread); every score is eps_traj of dopri5 rollouts from the clean initial states
against the clean trajectories (``noisy_width_probe.clean_eps_traj``). SEEDS defaults to 1 for
``exact`` and 4 for ``ensemble``; W (the residual smoother's window) to 31.

- ``exact``: derivative matching on the noisy states paired with the *noise-free* derivatives,
  a reference that isolates the cost of the noise on the states (errors in variables).
- ``ensemble``: if different initialisations ended in different wrong fields, averaging their
  fields would cut the error; if the noise realisation fixes the error, it would not. The mean
  field is a diagnostic only: a sum of GENERIC fields with different E and S is not GENERIC.
- ``model_smooth``: fit on the Savitzky-Golay states and derivatives (``noisy_width_probe``),
  fit each trajectory's initial state so the model's RK4 flow (four substeps per interval)
  matches the noisy samples, smooth the residual samples - flow with a cubic Savitzky-Golay
  filter of window W and add it back (states: flow + smoothed residual; derivatives: the model's
  field along the flow + the residual's smoothed derivative), then refit from scratch on those.
  Prints the derivative error (against the true derivatives) of each stage for W in 15-71.
- ``separable``: the same fits with ``GENERICNet(3, separable=1)`` (energy K(p) + U(q, S), the DNO's
  true form), on the Savitzky-Golay states and derivatives, the dataset's noisy derivatives and the
  exact derivatives at the noisy states: does a model class that fits the mechanics cut the variance
  of the states-only fit more than that of derivative matching? SEEDS defaults to 1.
- ``information``: derivative matching on the noisy states, with the exact derivatives plus white
  Gaussian noise scaled to a relative error r, for r from the dataset's (1.3e-2) through the
  Savitzky-Golay estimate's (2.75e-2) and the smoothing spline's (3.8e-2) to a raw central
  difference's. If eps_traj grows with r as the states-only fits do, the gap between derivative
  matching and the states-only fits is the information the given derivatives add, not a weakness
  of the states-only loss. (Smoother errors are correlated along a trajectory, white noise is
  not; white noise of the same size is the kinder case for derivative matching.) The same run fits
  the two states-only routes (Savitzky-Golay, smoothing spline) for comparison and writes
  ``results/noisy_dno_information.{md,json,png}``.
"""

import sys

import torch

from experiments.noisy_width_probe import INSTANCE, clean_eps_traj, noisy_and_clean, savgol
from sp_dynamics import GENERICNet
from sp_dynamics.fitting import FitConfig, fit
from sp_dynamics.integrators import integrate


def _fit(x, dx, seed: int = 0, separable: int = 0):
    torch.manual_seed(seed)
    model = GENERICNet(3, separable=separable).double()
    result = fit(model, x.reshape(-1, 3), dx.reshape(-1, 3), config=FitConfig(seed=seed), progress=False)
    return model, result


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


class MeanField(torch.nn.Module):
    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, t, x):
        return sum(m(t, x) for m in self.models) / len(self.models)


def exact(data, clean, seeds: int = 1) -> None:
    i = INSTANCE
    print(f"dataset derivative noise (relative): {_rel(data.dx[i], clean.dx[i]):.3e}")
    for seed in range(seeds):
        model, result = _fit(data.x[i], clean.dx[i], seed)
        print(f"noisy states + exact derivatives, seed {seed}: eps_traj {clean_eps_traj(model, clean):.3e}, "
              f"loss {result.final_loss:.3e}, {result.seconds:.0f} s", flush=True)


def ensemble(data, clean, seeds: int = 4) -> None:
    x, dx = savgol(data.t, data.x[INSTANCE])
    models = []
    for seed in range(seeds):
        model, result = _fit(x, dx, seed)
        models.append(model)
        print(f"savgol fit, seed {seed}: eps_traj {clean_eps_traj(model, clean):.3e} ({result.seconds:.0f} s); "
              f"mean field of seeds 0-{seed}: {clean_eps_traj(MeanField(models), clean):.3e}", flush=True)


def model_smooth(data, clean, window: int = 31) -> None:
    from scipy.signal import savgol_filter

    i, t = INSTANCE, data.t
    h, y, true = float(t[1] - t[0]), data.x[i], clean.dx[i]
    x, dx = savgol(t, y)
    print(f"savgol: state error {_rel(x, clean.x[i]):.2e}, derivative error {_rel(dx, true):.2e}")
    model, result = _fit(x, dx)
    print(f"  fit on them: eps_traj {clean_eps_traj(model, clean):.3e} ({result.seconds:.0f} s)", flush=True)
    model.train()  # the flow must stay differentiable in its initial states
    x0 = x[:, 0].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x0], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = ((integrate(model, x0, t, method="rk4", step_size=h / 4) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        flow = integrate(model, x0, t, method="rk4", step_size=h / 4)
        field = model(0.0, flow.reshape(-1, 3)).reshape(flow.shape)
    residual = (y - flow).numpy()
    print(f"model flow from fitted initial states: state error {_rel(flow, clean.x[i]):.2e}, "
          f"derivative error {_rel(field, true):.2e}")
    for w in sorted({15, 31, 51, 71, window}):
        xs = flow + torch.as_tensor(savgol_filter(residual, w, 3, axis=1))
        ds = field + torch.as_tensor(savgol_filter(residual, w, 3, deriv=1, delta=h, axis=1))
        print(f"  + residual smoothed over {w}: state error {_rel(xs, clean.x[i]):.2e}, derivative error {_rel(ds, true):.2e}")
    xs = flow + torch.as_tensor(savgol_filter(residual, window, 3, axis=1))
    ds = field + torch.as_tensor(savgol_filter(residual, window, 3, deriv=1, delta=h, axis=1))
    model, result = _fit(xs, ds)
    print(f"  refit on them (window {window}): eps_traj {clean_eps_traj(model, clean):.3e} ({result.seconds:.0f} s)", flush=True)


def separable(data, clean, seeds: int = 1) -> None:
    i = INSTANCE
    x, dx = savgol(data.t, data.x[i])
    for seed in range(seeds):
        for name, (xs, ds) in {"savgol (states only)": (x, dx), "dataset derivatives": (data.x[i], data.dx[i]),
                               "noisy states + exact derivatives": (data.x[i], clean.dx[i])}.items():
            model, result = _fit(xs, ds, seed, separable=1)
            print(f"separable energy, {name}, seed {seed}: eps_traj {clean_eps_traj(model, clean):.3e} "
                  f"({sum(p.numel() for p in model.parameters())} parameters, {result.seconds:.0f} s)", flush=True)


def information(data, clean) -> None:
    import time

    from experiments._shim import RESULTS
    from sp_dynamics.derivatives import estimate_derivatives
    from sp_dynamics.runners.common import machine_line, pyplot, write_results

    begin = time.time()
    i, t = INSTANCE, data.t
    h = float(t[1] - t[0])
    central = (data.x[i, :, 2:] - data.x[i, :, :-2]) / (2 * h)
    raw = _rel(central, clean.dx[i, :, 1:-1])
    print(f"relative derivative error of a central difference of the noisy states: {raw:.2e}")
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.dx[i].shape, generator=generator, dtype=clean.dx.dtype)
    levels = (_rel(data.dx[i], clean.dx[i]), 2.75e-2, 3.8e-2, raw)
    routes = [("derivative matching, white derivative noise", data.x[i],
               clean.dx[i] + noise * (r * clean.dx[i].norm() / noise.norm())) for r in levels]
    routes += [("states only, Savitzky-Golay (cubic, 15 samples)", *savgol(t, data.x[i])),
               ("states only, smoothing spline", *estimate_derivatives(t, data.x[i], "smoothing_spline"))]
    rows = []
    for route, x, dx in routes:
        model, result = _fit(x, dx)
        rows.append({"route": route, "derivative_error": _rel(dx, clean.dx[i]), "eps_traj": clean_eps_traj(model, clean),
                     "fit_s": result.seconds})
        print(f"{route}, derivatives off by {rows[-1]['derivative_error']:.2e}: eps_traj {rows[-1]['eps_traj']:.3e} "
              f"({result.seconds:.0f} s)", flush=True)
    wall = time.time() - begin
    lines = ["# Noisy DNO: eps_traj against the error of the derivatives a fit is given", "",
             "- command: `python -m experiments.noisy_dno_probe information`", machine_line(wall, 1),
             f"- DNO instance {INSTANCE}, noise_std 0.01 on the states, `sp_dynamics.fit` defaults, `GENERICNet(3)`, seed 0; "
             "eps_traj of dopri5 rollouts from the clean initial states against the clean trajectories",
             f"- a central difference of the noisy states is off by {raw:.2e} (relative)", "",
             "| route | derivative error (relative, against the true ones) | eps_traj | fit time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['route']} | {r['derivative_error']:.2e} | {r['eps_traj']:.3e} | {r['fit_s']:.0f} |" for r in rows]
    write_results(RESULTS, "noisy_dno_information", "\n".join(lines) + "\n", {"rows": rows, "wall_time_s": wall})
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        white = [r for r in rows if r["route"].startswith("derivative matching")]
        ax.plot([r["derivative_error"] for r in white], [r["eps_traj"] for r in white], "o-",
                label="derivative matching, white derivative noise")
        for r, marker in zip([r for r in rows if r["route"].startswith("states only")], "s^"):
            ax.plot(r["derivative_error"], r["eps_traj"], marker, label=r["route"])
        ax.axhline(2 * white[0]["eps_traj"], color="grey", ls="--", lw=1, label="2x the first point (the dataset's noise level)")
        ax.set(xscale="log", yscale="log", xlabel="relative error of the derivatives fitted",
               ylabel="eps_traj (clean rollouts)", title=f"DNO instance {INSTANCE}, state noise 0.01")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "noisy_dno_information.png", dpi=120)
        plt.close(fig)
    print("\n".join(lines))


PROBES = {"exact": exact, "ensemble": ensemble, "model_smooth": model_smooth, "separable": separable,
          "information": information}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in PROBES or len(argv) > 2:
        sys.exit("usage: python -m experiments.noisy_dno_probe exact|ensemble|model_smooth|separable|information [N]")
    torch.set_num_threads(1)
    data, clean = noisy_and_clean()
    PROBES[argv[0]](data, clean, *map(int, argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
