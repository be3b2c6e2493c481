"""`python -m experiments.meta_multidomain`: `sp_dynamics.runners.multidomain` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.multidomain", "meta_multidomain", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
