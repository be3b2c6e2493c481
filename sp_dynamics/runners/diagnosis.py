"""Why the GENERIC networks did not learn: one measurement per suspected cause.

    python -m experiments.generic_diagnosis            # about 10 min on 2 cores
    python -m experiments.generic_diagnosis --quick    # fewer evaluations (tests)

(``sp-dynamics diagnose-generic`` after install).

Single instances of the protocol-v1 DNO (test instance 70, and 76 for the initialisation study)
and gas containers (instance 70), all trajectories with exact derivatives, float64. Sections:

1. representability: the true E and S are given and only the bracket's parameters are fitted
   (L-BFGS), so what remains is the bracket class's own floor;
2. optimiser: the same GENERICNet (mixed bracket) trained by Adam (cosine learning rate) and by
   L-BFGS, same number of loss evaluations;
3. initialisation: how many of 8 initialisations reach a relative loss below 4e-3 within 100
   L-BFGS evaluations, without and with the entropy-orientation term of ``fit``;
4. the eps guard of the projections: the smallest |grad S|^2 met on the data against the guard;
5. the integrator behind eps_traj: dopri5 at the protocol's tolerances against 1000x tighter;
6. extrapolation: eps_field on the protocol grid (S = 0) against the data region;
7. the loss scaling: errors relative to the total mean square against per-coordinate ones.

Writes ``generic_diagnosis.md``.
"""

from __future__ import annotations

import sys
import time

import torch

from ..brackets import BasisBracket, KnownBracket, MixedBracket, ProjectionBracket, guard_eps
from ..data import make_family_dataset
from ..fitting import FitConfig, _lbfgs, derivative_loss, fit, orient_entropy
from ..io import atomic_write_text
from ..meta.evaluation import data_region
from ..metrics import eps_field, eps_traj, relative_error, rollout
from ..models import GENERICNet
from ..nn import standardize_inputs
from ..registry import get_system
from .common import Parser, command_line, default_out, machine_line


def _data(name: str, instance: int):
    system = get_system(name)
    data = make_family_dataset(name, seed=0)
    return system, data, data.params[instance], *data.pairs(instance)


def _bracket(kind: str, n: int):
    if kind == "projection":
        return ProjectionBracket(n)
    if kind == "projection_sd":
        return ProjectionBracket(n, state_dependent=True)
    if kind == "basis":
        return BasisBracket(n)
    return MixedBracket(n)


def representability(evals: int) -> list[str]:
    rows = ["| system | bracket | relative field error on the data, true E and S given |", "|---|---|---|"]
    for name in ("dno", "gas_containers"):
        system, data, mu, x, dx = _data(name, 70)
        for kind in ("projection", "projection_sd", "basis", "mixed"):
            torch.manual_seed(0)
            model = GENERICNet(system.dim, bracket=_bracket(kind, system.dim), energy=lambda y, mu=mu, s=system: s.E(mu, y),
                               entropy=lambda y, mu=mu, s=system: s.S(mu, y)).double()
            _lbfgs(model, lambda m: derivative_loss(m, x, dx), evals, FitConfig())
            err = float(relative_error(model(0.0, x).detach(), dx, (0, 1)))
            rows.append(f"| {name} | {kind} | {err:.2e} |")
    return rows


def optimiser(evals: int, traj: int = 10) -> tuple[list[str], GENERICNet]:
    system, data, mu, x, dx = _data("dno", 70)
    rows = ["| optimiser | relative loss | eps_traj |", "|---|---|---|"]
    models = {}
    for opt_name in ("adam", "lbfgs"):
        torch.manual_seed(0)
        model = GENERICNet(3).double()
        standardize_inputs(model, x)
        orient_entropy(model, x, dx)
        if opt_name == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, evals)
            for _ in range(evals):
                opt.zero_grad()
                loss = derivative_loss(model, x, dx)
                loss.backward()
                opt.step()
                sched.step()
        else:
            fit(model, x, dx, config=FitConfig(max_iter=evals, restarts=1, plateau_rtol=0.0), progress=False)
        loss = float(derivative_loss(model, x, dx).detach())
        pred = rollout(model, data.x[70, :traj, 0], data.t)
        rows.append(f"| {opt_name} ({evals} evaluations) | {loss:.2e} | {float(eps_traj(pred, data.x[70, :traj]).mean()):.2e} |")
        models[opt_name] = model
    return rows, models["lbfgs"]


def weighting(evals: int, restarts: int = 4, traj: int = 10) -> list[str]:
    """The loss scaling: the DNO entropy rate is small next to q' and p' (its mean square is about
    1/20 of theirs on instance 70); "coordinate" weighting divides each coordinate's error by its
    own mean square, "global" (the default) by the total."""
    system, data, mu, x, dx = _data("dno", 70)
    ms = dx.pow(2).mean(0)
    rows = [f"mean square of the targets per coordinate (q', p', S'): {', '.join(f'{v:.3g}' for v in ms.tolist())}", "",
            "| weighting | relative error q' | p' | S' | eps_traj |", "|---|---|---|---|---|"]
    for kind in ("global", "coordinate"):
        torch.manual_seed(0)
        model = GENERICNet(3).double()
        fit(model, x, dx, config=FitConfig(max_iter=evals, weighting=kind, restarts=restarts), progress=False)
        with torch.no_grad():
            err = ((model(0.0, x) - dx).pow(2).mean(0) / ms).sqrt()
        pred = rollout(model, data.x[70, :traj, 0], data.t)
        rows.append(f"| {kind} | {err[0]:.2e} | {err[1]:.2e} | {err[2]:.2e} | "
                    f"{float(eps_traj(pred, data.x[70, :traj]).mean()):.2e} |")
    return rows


def initialisation(evals: int, starts: int = 8) -> list[str]:
    system, data, mu, x, dx = _data("dno", 76)
    rows = [f"| entropy-orientation term | starts below 4e-3 after {evals} evaluations | losses |", "|---|---|---|"]
    for lam in (0.0, 1.0):
        losses = []
        for seed in range(starts):
            torch.manual_seed(seed)
            model = GENERICNet(3).double()
            standardize_inputs(model, x)
            orient_entropy(model, x, dx)
            cfg = FitConfig(restarts=1, max_iter=evals, chunk=evals, plateau_rtol=0.0, entropy_penalty=lam)
            fit(model, x, dx, config=cfg, progress=False)
            losses.append(float(derivative_loss(model, x, dx).detach()))
        good = sum(v < 4e-3 for v in losses)
        rows.append(f"| {'on' if lam else 'off'} | {good} of {starts} | {', '.join(f'{v:.1e}' for v in losses)} |")
    return rows


def guard_and_integrator(model: GENERICNet, traj: int = 10) -> list[str]:
    system, data, mu, x, dx = _data("dno", 70)
    dS = model.gradients(x)[1].detach()
    smallest = float(dS.pow(2).sum(-1).min())
    eps = guard_eps(torch.float64)
    x0, xt = data.x[70, :traj, 0], data.x[70, :traj]
    loose = float(eps_traj(rollout(model, x0, data.t), xt).mean())
    tight = float(eps_traj(rollout(model, x0, data.t, rtol=1e-10, atol=1e-12), xt).mean())
    return [f"- smallest |grad S|^2 on the data {smallest:.2e} against the float64 guard {eps:.0e}: the guard changes "
            f"the projection by a relative {eps / smallest:.0e}.",
            f"- eps_traj with dopri5 at rtol 1e-7 / atol 1e-9 (protocol): {loose:.3e}; at rtol 1e-10 / atol 1e-12: "
            f"{tight:.3e}."]


def extrapolation(model: GENERICNet, evals: int = 1000) -> list[str]:
    system, data, mu, x, dx = _data("dno", 70)
    grid = system.field_grid(50)
    true = system.dynamics(mu)
    known = GENERICNet(3, bracket=KnownBracket(lambda y: system.L(mu, y), lambda y: system.M(mu, y), 3)).double()
    torch.manual_seed(0)
    fit(known, x, dx, config=FitConfig(max_iter=evals, restarts=1), progress=False)
    region = data_region(system, data, grid, 70)
    rows = ["| model | eps_field, protocol grid (S = 0) | eps_field, data region |", "|---|---|---|"]
    for label, m in (("mixed bracket, learned E, S", model), ("true L and M, learned E, S", known)):
        rows.append(f"| {label} | {eps_field(m, true, grid):.3f} | {eps_field(m, true, region):.2e} |")
    return rows


def main(argv=None, *, default_results=None, prog: str = "sp-dynamics diagnose-generic") -> str:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few evaluations (a smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    evals = 30 if args.quick else 1000
    start = time.time()
    sections = ["## 1. Representability (bracket parameters fitted, true E and S)", "", *representability(evals), ""]
    traj = 1 if args.quick else 10  # quick: one rollout per model (a smoke run)
    opt_rows, model = optimiser(60 if args.quick else 3000, traj)
    sections += ["## 2. Optimiser (DNO instance 70, mixed bracket, learned E and S)", "", *opt_rows, ""]
    sections += ["## 3. Initialisation (DNO instance 76, no restarts)", "",
                 *initialisation(10 if args.quick else 100, 2 if args.quick else 8), ""]
    sections += ["## 4-5. Projection guard and the rollout integrator (the L-BFGS model of section 2)", "",
                 *guard_and_integrator(model, traj), ""]
    sections += ["## 6. Extrapolation in S (DNO instance 70)", "", *extrapolation(model, 20 if args.quick else 1000), ""]
    sections += ["## 7. Loss scaling (DNO instance 70, sp_dynamics.fit, mixed bracket)", "",
                 *(weighting(30, restarts=1, traj=1) if args.quick else weighting(3000)), ""]
    header = [
        "# Why the GENERIC networks did not learn: measurements",
        "",
        command_line(prog, argv),
        machine_line(time.time() - start),
        "- protocol-v1 data, one instance, all 10 trajectories x 101 states with exact derivatives, float64",
        "",
    ]
    text = "\n".join(header + sections)
    out = default_out(args.out, default_results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, out / ("generic_diagnosis_quick.md" if args.quick else "generic_diagnosis.md"))
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
