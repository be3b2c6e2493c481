"""`python -m experiments.meta_benchmark`: `sp_dynamics.runners.benchmark` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.benchmark", "meta_benchmark", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
