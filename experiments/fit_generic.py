"""`python -m experiments.fit_generic`: `sp_dynamics.runners.fit_instances` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.fit_instances", "fit_generic", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
