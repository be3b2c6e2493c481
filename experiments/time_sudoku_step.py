"""Time one training step of each Sudoku model at a preset's size (default: paper), to say what
a preset would cost on this machine before running it.

    python experiments/time_sudoku_step.py [PRESET] [STEPS]

Uses the validation puzzles (built from their seed, or read from the cache of an earlier run)
and prints seconds per Adam step (forward over all rounds + backward) at the preset's batch.
"""

import sys
import time
from pathlib import Path

import torch

from metriplector.runners.sudoku import PRESETS, build, dataset, model_kwargs
from metriplector.sudoku import sudoku_loss

preset = sys.argv[1] if len(sys.argv) > 1 else "paper"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 2
cfg = PRESETS[preset]
q, s, _ = dataset("val", 200, Path(__file__).parent / "results" / "sudoku_data")
reps = -(-cfg.batch // len(q))
q, s = q.repeat(reps, 1)[: cfg.batch], s.repeat(reps, 1)[: cfg.batch]
for kind in ("metriplector", "rrn"):
    model = build(kind, model_kwargs(cfg, kind))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for _ in range(steps):
        t0 = time.time()
        loss = sudoku_loss(q, s, model(q))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.time() - t0)
    n = sum(p.numel() for p in model.parameters())
    print(f"{preset} {kind}: {n} parameters, batch {cfg.batch}, {cfg.rounds} rounds: "
          f"{min(times):.2f} s per step (best of {steps}; {torch.get_num_threads()} threads); "
          f"{cfg.steps} steps ~ {min(times) * cfg.steps / 3600:.1f} h", flush=True)
