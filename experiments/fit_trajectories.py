"""`python -m experiments.fit_trajectories`: `sp_dynamics.runners.trajectories` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.trajectories", "fit_trajectories", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
