"""Gas containers: which part of a GENERIC network does not learn?

    python -m experiments.gas_decomposition                    # instances 75 and 70, about 8 min on 1 core
    python -m experiments.gas_decomposition --instances 75 --evals 500    # quicker

A single gas-containers instance fitted by ``sp_dynamics.fit`` (derivative matching, all 10
trajectories x 101 states, float64) with parts of the true model given:

* ``E, S given``: only the mixed bracket is learned (A, Xi, C and the friction network g);
* ``E given``: the bracket and the entropy network are learned;
* ``S given``: the bracket and the energy network are learned;
* ``nothing given``: the full ``GENERICNet`` of the fit-instances runner.

Each with the default friction network (``friction_law="mlp"``, an MLP of grad E) and with the
power-law friction (``friction_law="power"``). The relative error of each coordinate of the field
on the data, eps_traj, and eps_field on the data region are written to
``experiments/results/gas_decomposition.md``. One seed (0), the fit's default 4 restarts
(1 when nothing is learned but the bracket).
"""

from __future__ import annotations

import argparse
import time

import torch

import systems  # noqa: F401  (registers the built-in systems)
from sp_dynamics import GENERICNet, get_system, make_family_dataset
from sp_dynamics.fitting import FitConfig, fit
from sp_dynamics.io import atomic_write_text
from sp_dynamics.runners.common import command_line, machine_line
from sp_dynamics.runners.fit_instances import evaluate_fit

GIVEN = ("E, S", "E", "S", "nothing")


def partly_given_model(system, mu, given: str, law: str = "mlp") -> GENERICNet:
    """The runners' gas model (mixed bracket fed grad E) with the true E and/or S of the instance
    ``mu`` given (``given`` names them: "E, S", "E", "S" or "nothing") and the rest learned."""
    energy = (lambda y: system.E(mu, y)) if "E" in given else None
    entropy = (lambda y: system.S(mu, y)) if "S" in given else None
    return GENERICNet(system.dim, bracket="mixed", friction_input="gradient", friction_law=law,
                      energy=energy, entropy=entropy).double()


def one(system, data, instance: int, given: str, law: str, evals: int) -> dict:
    x, dx = data.pairs(instance)
    torch.manual_seed(0)
    model = partly_given_model(system, data.params[instance], given, law)
    restarts = 1 if given == "E, S" else 4  # fixed E and S cannot be re-initialised
    result = fit(model, x, dx, config=FitConfig(max_iter=evals, restarts=restarts, restart_iter=min(100, evals)),
                 progress=False)
    f = model(0.0, x).detach()
    coord = ((f - dx).pow(2).mean(0) / dx.pow(2).mean(0)).sqrt()
    return {"instance": instance, "given": given, "law": law, "loss": result.final_loss, "coord": coord.tolist(),
            "seconds": result.seconds, **evaluate_fit(model, system, data, instance)}


def probe_parser(description: str, instances: list[int], out: str) -> argparse.ArgumentParser:
    """The options the gas probes share: ``--instances``, ``--evals`` and ``--out``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=instances)
    parser.add_argument("--evals", type=int, default=3000, help="L-BFGS evaluations per fit (FitConfig.max_iter)")
    parser.add_argument("--out", default=out)
    return parser


def gas_data():
    """One thread (small fits) and the protocol's gas-containers family (seed 0)."""
    torch.set_num_threads(1)
    return get_system("gas_containers"), make_family_dataset("gas_containers", seed=0)


def write_table(lines: list[str], out: str) -> str:
    """Write a probe's markdown lines to ``out`` atomically, print and return the text."""
    text = "\n".join(lines) + "\n"
    atomic_write_text(text, out)
    print(text)
    return text


def main(argv=None) -> str:
    parser = probe_parser(__doc__, [75, 70], "experiments/results/gas_decomposition.md")
    parser.add_argument("--given", nargs="+", default=list(GIVEN), choices=GIVEN, help="which parts are given")
    args = parser.parse_args(argv)
    start = time.time()
    system, data = gas_data()
    rows = []
    for i in args.instances:
        for given in args.given:
            for law in ("mlp", "power"):
                r = one(system, data, i, given, law, args.evals)
                print(f"instance {i}, {given} given, friction {law}: loss {r['loss']:.2e}, eps_traj {r['eps_traj']:.2e}, "
                      f"{r['seconds']:.0f} s", flush=True)
                rows.append(r)
    lines = [
        "# Gas containers: which part of the GENERIC network does not learn",
        "",
        command_line("python -m experiments.gas_decomposition", argv),
        machine_line(time.time() - start),
        f"- `sp_dynamics.fit` defaults but max_iter={args.evals}; seed 0; mixed bracket fed grad E; "
        "relative error per coordinate of the field on the training data (q, p, S1, S2)",
        "",
        "| instance | given | friction law | loss | rel. error q, p, S1, S2 | eps_traj | eps_field (data region) | fit (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        coord = ", ".join(f"{c:.1e}" for c in r["coord"])
        lines.append(f"| {r['instance']} | {r['given']} | {r['law']} | {r['loss']:.2e} | {coord} | {r['eps_traj']:.2e} "
                     f"| {r['eps_field_data']:.2e} | {r['seconds']:.0f} |")
    return write_table(lines, args.out)


if __name__ == "__main__":
    main()
