"""`python -m experiments.demo`: `sp_dynamics.runners.demo` (see its docstring)."""

from experiments._shim import main_of, run

main = main_of("sp_dynamics.runners.demo", "demo")

if __name__ == "__main__":
    run(main)
