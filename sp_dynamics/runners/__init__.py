"""The runners behind ``sp-dynamics`` commands: benchmarks and experiments with their presets,
tables, figures and result files. Each module's ``main(argv)`` is one command; the shared pieces
(parallel jobs, result files, figures, the user-error convention) are in :mod:`.common` and
:mod:`.figures`. In a checkout, ``python -m experiments.<name>`` runs the same code and writes to
``experiments/results``."""
