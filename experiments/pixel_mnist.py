"""`python -m experiments.pixel_mnist`: `metriplector.runners.pixel_mnist` with results in
experiments/results and the shipped checkpoints in metriplector/checkpoints (see its docstring)."""

from experiments._shim import REPO, RESULTS, main_of, run

main = main_of("metriplector.runners.pixel_mnist", "pixel_mnist", default_results=RESULTS,
               default_checkpoints=str(REPO / "metriplector" / "checkpoints"))

if __name__ == "__main__":
    run(main)
