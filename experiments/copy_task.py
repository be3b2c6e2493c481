"""`python -m experiments.copy_task`: `sp_dynamics.runners.copy_task` with results in experiments/results
and checkpoints in sp_dynamics/sequence/checkpoints (the shipped ones; see its docstring)."""

from experiments._shim import REPO, RESULTS, main_of, run

main = main_of("sp_dynamics.runners.copy_task", "copy_task", default_results=RESULTS,
               default_checkpoints=str(REPO / "sp_dynamics" / "sequence" / "checkpoints"))

if __name__ == "__main__":
    run(main)
