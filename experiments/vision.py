"""`python -m experiments.vision`: `metriplector.runners.vision` with results in experiments/results
and the shipped checkpoint in metriplector/checkpoints (see its docstring)."""

from experiments._shim import REPO, RESULTS, main_of, run

main = main_of("metriplector.runners.vision", "vision", default_results=RESULTS,
               default_checkpoints=str(REPO / "metriplector" / "checkpoints"))

if __name__ == "__main__":
    run(main)
