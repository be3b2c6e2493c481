"""`python -m experiments.meta_shots`: `sp_dynamics.runners.shots` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.shots", "meta_shots", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
