"""Gas containers: where in the data region is a single fit's field error?

    python -m experiments.gas_field_error                       # instances 70, 75, 77; ~15 min on 1 core
    python -m experiments.gas_field_error --instances 70 --evals 500     # quicker

One gas-containers instance fitted by ``sp_dynamics.fit`` with its defaults (derivative matching,
all 10 trajectories x 101 states, float64, seed 0), as in ``experiments.fit_generic``, three ways:
the runner's model (one energy MLP), the separable energy K(p) + U(q, S1, S2) (``--energy
separable`` of the runner), and the true energy given (bracket and entropy learned). The
protocol's data-region eps_field (``sp_dynamics.meta.evaluation.data_region``: grid points within
two grid spacings of the instance's trajectories in (q, p), entropies from the nearest trajectory
state) is then split by where the points are:

* by the piston position, ``|q - 1|``: the walls are at q = 0 and q = 2 (the volumes q and 2 - q),
  where the force (2/3)(E1/q - E2/(2 - q)) grows like q^(-5/3);
* by the distance in (q, p) from the nearest trajectory state, in grid spacings;
* by coordinate (q', p', S1', S2');
* the few points with the largest error: where they are and which trajectory state they sit next to.

Each part's relative error is ``||f_hat - f|| / ||f||`` over its own points, and its share is its
fraction of the squared error of the whole region. Writes ``experiments/results/gas_field_error.md``.
"""

from __future__ import annotations

import time

import torch

import systems  # noqa: F401  (registers the built-in systems)
from experiments.gas_decomposition import gas_data, partly_given_model, probe_parser, write_table
from sp_dynamics.fitting import FitConfig, fit
from sp_dynamics.meta.evaluation import data_region
from sp_dynamics.runners.common import command_line, machine_line
from sp_dynamics.runners.fit_instances import build_model, evaluate_fit

MODELS = ("mlp", "separable", "E given")
WALL_BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 1.0))    # |q - 1|: interior, between, within 0.3 of a wall
DIST_BANDS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0))    # grid spacings from the nearest trajectory state
TOP = 4                                              # the points with the largest error, listed per fit


def build(system, data, instance: int, kind: str) -> torch.nn.Module:
    if kind == "E given":
        return partly_given_model(system, data.params[instance], "E")
    return build_model(system, "mixed", energy=kind)


def breakdown(model, system, data, instance: int) -> dict:
    """Relative error and share of the squared error of the data-region field, by region."""
    grid = system.field_grid(50)
    points = data_region(system, data, grid, instance)
    spacing = float((grid[:, 0].max() - grid[:, 0].min()) / 49)
    states = data.x[instance].reshape(-1, system.dim)
    dist, nearest = torch.cdist(points[:, :2], states[:, :2]).min(-1)
    dist = dist / spacing
    with torch.no_grad():
        f_hat = model(0.0, points)
    f = system.dynamics(data.params[instance])(0.0, points)
    err2, total = (f_hat - f).pow(2), float((f_hat - f).pow(2).sum())

    def part(mask: torch.Tensor) -> tuple[int, float, float]:
        n = int(mask.sum())
        if n == 0:
            return 0, float("nan"), 0.0
        return n, float(err2[mask].sum().sqrt() / f[mask].pow(2).sum().sqrt()), float(err2[mask].sum()) / total

    wall = (points[:, 0] - 1).abs()
    point_err = err2.sum(-1)
    top = [{"x": points[i].tolist(), "share": float(point_err[i]) / total, "distance": float(dist[i]),
            "time_index": int(nearest[i]) % data.x.shape[2]} for i in point_err.argsort(descending=True)[:TOP]]
    return {"points": len(points), "top": top,
            "wall": [part((wall >= lo) & (wall < hi)) for lo, hi in WALL_BANDS],
            "distance": [part((dist >= lo) & (dist < hi + 1e-9)) for lo, hi in DIST_BANDS],
            "coordinate_share": (err2.sum(0) / total).tolist()}


def one(system, data, instance: int, kind: str, evals: int) -> dict:
    torch.manual_seed(0)
    model = build(system, data, instance, kind)
    result = fit(model, *data.pairs(instance), config=FitConfig(max_iter=evals, restart_iter=min(100, evals)),
                 progress=False)
    return {"instance": instance, "model": kind, "loss": result.final_loss, "seconds": result.seconds,
            **evaluate_fit(model, system, data, instance), **breakdown(model, system, data, instance)}


def _cell(part) -> str:
    n, rel, share = part
    return f"{rel:.1e} ({share:.0%}, {n})"


def main(argv=None) -> str:
    parser = probe_parser(__doc__, [70, 75, 77], "experiments/results/gas_field_error.md")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args(argv)
    start = time.time()
    system, data = gas_data()
    rows = []
    for i in args.instances:
        for kind in args.models:
            r = one(system, data, i, kind, args.evals)
            print(f"instance {i}, {kind}: eps_traj {r['eps_traj']:.2e}, eps_field (data region) "
                  f"{r['eps_field_data']:.2e}, {r['seconds']:.0f} s", flush=True)
            rows.append(r)
    bands = lambda b, fmt: " | ".join(fmt.format(lo=lo, hi=hi) for lo, hi in b)  # noqa: E731
    lines = [
        "# Gas containers: where in the data region is the field error?",
        "",
        command_line("python -m experiments.gas_field_error", argv),
        machine_line(time.time() - start),
        f"- `sp_dynamics.fit` defaults but max_iter={args.evals}; seed 0; mixed bracket fed grad E. Models: `mlp` = "
        "the fit-instances runner's `GENERICNet` (one energy MLP), `separable` = its `--energy separable` "
        "(E = K(p) + U(q, S1, S2)), `E given` = the true energy, bracket and entropy learned",
        "- each cell: relative field error over that part of the data region (its share of the region's squared "
        "error, its number of points)",
        "",
        "| instance | model | eps_traj | eps_field (data region) | "
        + bands(WALL_BANDS, "\\|q - 1\\| in [{lo}, {hi})") + " | "
        + bands(DIST_BANDS, "{lo}-{hi} spacings from the data") + " | share of q', p', S1', S2' |",
        "|---|---|---|---|" + "---|" * (len(WALL_BANDS) + len(DIST_BANDS)) + "---|",
    ]
    for r in rows:
        shares = ", ".join(f"{s:.0%}" for s in r["coordinate_share"])
        lines.append(f"| {r['instance']} | {r['model']} | {r['eps_traj']:.2e} | {r['eps_field_data']:.2e} | "
                     + " | ".join(_cell(p) for p in r["wall"]) + " | "
                     + " | ".join(_cell(p) for p in r["distance"]) + f" | {shares} |")
    lines += ["", f"The {TOP} points with the largest error of each fit (share of the region's squared error; the sampling "
              "index of the nearest trajectory state, 0 = an initial state, whose entropies the point carries):", "",
              "| instance | model | points (q, p, S1, S2): share, distance in grid spacings, nearest state's index |",
              "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['instance']} | {r['model']} | " + "; ".join(
            "(" + ", ".join(f"{v:.2f}" for v in t["x"]) + f"): {t['share']:.0%}, {t['distance']:.1f}, {t['time_index']}"
            for t in r["top"]) + " |")
    return write_table(lines, args.out)


if __name__ == "__main__":
    main()
