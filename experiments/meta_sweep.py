"""`python -m experiments.meta_sweep`: `sp_dynamics.runners.sweep` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.sweep", "meta_sweep", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
