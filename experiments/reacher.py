"""`python -m experiments.reacher`: `metriplector.runners.reacher` with results in experiments/results and
checkpoints in metriplector/checkpoints (the shipped ones; see its docstring)."""

from experiments._shim import REPO, RESULTS, main_of, run

main = main_of("metriplector.runners.reacher", "reacher", default_results=RESULTS,
               default_checkpoints=str(REPO / "metriplector" / "checkpoints"))

if __name__ == "__main__":
    run(main)
