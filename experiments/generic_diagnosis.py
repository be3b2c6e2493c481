"""`python -m experiments.generic_diagnosis`: `sp_dynamics.runners.diagnosis` with results in experiments/results (see its docstring)."""

from experiments._shim import RESULTS, main_of, run

main = main_of("sp_dynamics.runners.diagnosis", "generic_diagnosis", default_results=RESULTS)

if __name__ == "__main__":
    run(main)
