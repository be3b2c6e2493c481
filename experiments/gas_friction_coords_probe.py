"""Probe: does a friction network that sees only the temperatures fit the gas containers better?

    python experiments/gas_friction_coords_probe.py INSTANCE SEED [INSTANCE SEED ...]

The runners' gas model (``fit-instances --energy separable --walls``: separable energy with wall
inputs, ``MixedBracket(friction_input="gradient")``) feeds its friction network all of grad E,
including the piston force dE/dq, which is steep at the walls; the true friction
gamma / (T1 T2)^2 depends on the temperatures T_i = dE/dS_i alone. This fits the same model with
``friction_coords=(2, 3)`` (the friction network sees T1 and T2 only) with the settings of the
``epen_polish`` run (``FitConfig(energy_penalty=10, polish_iter=3000)``, one start) and prints the
runner's scores, one JSON line per fit. Each fit is the runner's ``fit_one`` in this process, with
the runners' per-system model choice (``GENERIC_MODEL``) extended for this run only.
"""

import json
import sys

from sp_dynamics.fitting import FitConfig
from sp_dynamics.runners import common
from sp_dynamics.runners.fit_instances import FitBenchConfig, fit_one


def main(argv: list[str]) -> None:
    if len(argv) < 2 or len(argv) % 2:
        sys.exit("usage: gas_friction_coords_probe.py INSTANCE SEED [INSTANCE SEED ...]")
    common.GENERIC_MODEL["gas_containers"] = {"friction_input": "gradient", "friction_coords": (2, 3)}
    cfg = FitBenchConfig(fit=FitConfig(energy_penalty=10.0, polish_iter=3000))
    for instance, seed in zip(map(int, argv[::2]), map(int, argv[1::2])):
        row = fit_one("gas_containers", "mixed", cfg, instance, seed, energy="separable", walls=True)
        keep = ("instance", "seed", "data_loss", "eps_traj", "eps_field_data", "eps_field_held_out",
                "eps_traj_held_out", "max_abs_dEdt", "min_dSdt", "fit_s")
        print(json.dumps({k: row[k] for k in keep}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
