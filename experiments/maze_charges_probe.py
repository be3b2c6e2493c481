"""Scratch probe for issue 14 (maze size generalisation), kept so its numbers can be reproduced.

    python experiments/maze_charges_probe.py DAMPING_POWER SOURCES ALPHA_PENALTY STEPS SEED
    python experiments/maze_charges_probe.py 2 charges 0 300 0     # the candidate
    python experiments/maze_charges_probe.py 2 free 0.01 300 0     # free sources, 1/N^2 damping

Trains one MazeSolver on the usual 250 mazes of 15x15 (seed 1000 + SEED), then evaluates it on
a few fresh mazes (seed 777) of 15, 39, 99 and 201: 50, 20, 10 and 4 mazes. It is not the
50-maze protocol of the issue and writes no results file; the state dict goes to /tmp.
"""

import sys
import time

import torch

from metriplector.maze import MazeSolver, f1_scores, maze_dataset

p, sources, lam, steps, seed = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(seed)
cells, target = maze_dataset(15, 250, seed=1000 + seed)
m = MazeSolver(damping_power=p, sources=sources, max_iter=0).double()
opt = torch.optim.Adam(m.parameters(), lr=1e-2)
pos = float(target.mean())
lf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float64))
g = torch.Generator().manual_seed(seed)
t = time.time()
for i in range(steps):
    idx = torch.randint(0, 250, (32,), generator=g)
    _, alpha, _, _ = m.operators(cells[idx])
    loss = lf(m(cells[idx]), target[idx])
    penalty = (alpha * 15**2).mean()
    opt.zero_grad()
    (loss + lam * penalty).backward()
    opt.step()
    if i % 50 == 0:
        print(i, float(loss.detach()), m.last_info.iterations, flush=True)
print("train", time.time() - t)
torch.save(m.state_dict(), f"/tmp/mz_{sources}_{p}_{seed}.pt")
for s, c in ((15, 50), (39, 20), (99, 10), (201, 4)):
    cl, tg = maze_dataset(s, c, 777)
    t = time.time()
    with torch.no_grad():
        lo = m(cl)
    print(s, f1_scores(lo, tg), round(time.time() - t, 1), m.last_info, flush=True)
