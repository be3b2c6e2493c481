"""Reacher from pixels with a Metriplector world model and CEM planning: ``sp-dynamics reacher``.

    sp-dynamics reacher collect --preset cpu                # random-policy episodes on disk (resumable)
    sp-dynamics reacher train --preset cpu --jobs 2         # both world models, same data, same budget
    sp-dynamics reacher eval --checkpoint ckpt.pt --episodes 20 --seed 50000   # one JSON line
    sp-dynamics reacher eval --policy oracle                # the true-simulator and random references
    sp-dynamics reacher eval --stored DIR                   # pose diagnostics on recorded episodes (one JSON line)
    sp-dynamics reacher figure --preset cpu                 # curves and open-loop rollouts

(``python -m experiments.reacher ...`` in a checkout writes to ``experiments/results``.) Needs the
optional extra: ``pip install 'sp-dynamics[control]'`` (see ``metriplector.reacher_env`` for the
headless GL back ends).

Task (``metriplector.reacher_env``): goal reaching on dm_control reacher-easy with action repeat 5.
The goal is the joint configuration reached from the reset state after ``goal_steps`` x 5 physics
steps of random torques (redrawn every physics step), shown to the planner as a rendered frame; success when both joint angles come within 0.05
rad of it after some action within ``budget`` actions. The return of an episode is minus the sum
over its actions of the largest joint-angle error after that action (higher is better).

Planners, all with the same CEM settings, replanning after every action and warm-started from the
previous plan. A candidate's cost is its smallest distance to the goal over its ``horizon``
actions (success counts after any action): for the Metriplector world model and the equal-parameter
conv baseline, the squared distance of the predicted latent from the encoded goal frame; for the
true simulator (``oracle``, an upper bound that checks the planner), the squared joint-angle error.
Random actions are the floor.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sp_dynamics.config import apply_overrides, config_dict, config_hash
from sp_dynamics.io import atomic_save, atomic_write_text, safe_load
from sp_dynamics.nn import count_parameters
from sp_dynamics.runners.common import (Parser, UsageError, command_line, default_out, machine_line, pyplot, run_jobs,
                                        set_threads, result_stem, write_results)

from ._shared import add_train_options, check_device, check_models, check_parity, load_model_blob, warmup_cosine
from ..reacher_env import ControlUnavailable, Reacher, angle_distance, collect, load_episode
from ..world_model import WorldModel, cem_plan, conv_width_for, latent_cost, stack_history, world_model_loss

PACKAGE = Path(__file__).resolve().parent.parent
CHECKPOINTS = PACKAGE / "checkpoints"
MODELS = ("metriplector", "conv")
POLICIES = ("model", "oracle", "random")
CHECKPOINT_FORMAT = "metriplector-reacher/1"


@dataclass(frozen=True)
class ReacherConfig:
    # data
    episodes: int = 200
    episode_steps: int = 50
    action_repeat: int = 5
    data_seed: int = 0
    # model
    latent: int = 16
    widths: tuple = (16, 32, 48)
    layers: int = 2
    fields: int = 8
    history: int = 2            # frames per observation: the current and the previous (the arm's velocity)
    decoder: bool = True        # a pixel decoder for the reconstruction term
    # training
    steps: int = 3000
    batch: int = 16
    sequence: int = 6
    warmup_ar: int = 400
    lr: float = 1e-3
    ema: float = 0.99
    recon_weight: float = 1000.0  # weight of the reconstruction term (a pixel MSE of ~3e-3; needs decoder)
    recon_focus: float = 10.0     # extra weight of the moving pixels in it (the arm)
    eval_every: int = 250
    # evaluation
    eval_episodes: int = 20
    budget: int = 25
    goal_steps: int = 10
    horizon: int = 5
    population: int = 64
    elites: int = 8
    iterations: int = 4

    def validate(self) -> None:
        if min(self.episodes, self.episode_steps, self.steps, self.batch, self.eval_episodes, self.budget,
               self.horizon, self.population, self.iterations, self.eval_every) < 1:
            raise ValueError("episodes, episode_steps, steps, batch, eval_episodes, budget, horizon, population, "
                             "iterations and eval_every must all be >= 1")
        if not 2 <= self.sequence <= self.episode_steps:
            raise ValueError(f"sequence must be in 2..episode_steps ({self.episode_steps}), got {self.sequence}")
        if not 1 <= self.elites <= self.population:
            raise ValueError(f"need 1 <= elites <= population, got {self.elites} and {self.population}")
        if self.history < 1:
            raise ValueError(f"history must be >= 1 frame, got {self.history}")
        if self.recon_weight < 0 or (self.recon_weight > 0 and not self.decoder):
            raise ValueError(f"recon_weight must be >= 0, and > 0 only with decoder=True; got {self.recon_weight} "
                             f"with decoder={self.decoder}")


PRESETS = {
    "smoke": ReacherConfig(episodes=3, episode_steps=8, latent=8, widths=(8, 8, 8), layers=1, fields=4, steps=3,
                           batch=2, sequence=4, warmup_ar=1, eval_every=2, eval_episodes=1, budget=2, goal_steps=2,
                           horizon=2, population=8, elites=2, iterations=1),
    # the CPU preset: collection (75-128 s) + both models in parallel (--jobs 2, 24 min) + the evaluation: 27 min on
    # 2 cores for one seed (2026-12-05)
    "cpu": ReacherConfig(),
    # the paper's scale (10K random episodes, 913K parameters, 300 candidates x 30 iterations), for a GPU
    "paper": ReacherConfig(episodes=10000, latent=64, widths=(64, 128, 192), layers=4, fields=16, steps=50000,
                           batch=64, population=300, elites=30, iterations=30, eval_episodes=50),
}


def model_kwargs(cfg: ReacherConfig, kind: str) -> dict:
    base = {"latent": cfg.latent, "widths": tuple(cfg.widths), "layers": cfg.layers, "fields": cfg.fields,
            "history": cfg.history, "decoder": cfg.decoder}
    if kind == "conv":
        ref = WorldModel(**base).dynamics_parameters()
        base.update(dynamics="conv", conv_width=conv_width_for(ref, cfg.latent))
    return base


def build(kind: str, kwargs: dict) -> WorldModel:
    return WorldModel(**kwargs)


def data_dir(out: Path, cfg: ReacherConfig) -> Path:
    key = config_hash({k: getattr(cfg, k) for k in ("episodes", "episode_steps", "action_repeat", "data_seed")})
    return out / "reacher_data" / key


def run_folder(out: Path, preset: str, cfg: ReacherConfig) -> Path:
    return out / "runs" / f"reacher-{preset}-{config_hash(config_dict(cfg))}"


def load_data(folder: Path, cfg: ReacherConfig) -> dict[str, torch.Tensor]:
    return stack_episodes([load_episode(folder / f"episode_{k:05d}.npz") for k in range(cfg.episodes)], cfg)


def stack_episodes(eps: list[dict], cfg: ReacherConfig) -> dict[str, torch.Tensor]:
    """Loaded episodes of one length as batched tensors."""
    return {"frames": torch.from_numpy(np.stack([e["frames"] for e in eps])),           # (N, T+1, 64, 64, 3) uint8
            "actions": torch.from_numpy(np.stack([e["actions"] for e in eps])).float(),
            "rewards": torch.from_numpy(np.stack([e["rewards"] for e in eps])).float() / cfg.action_repeat,
            "qpos": torch.from_numpy(np.stack([e["qpos"] for e in eps])).double()}


def to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    return frames.movedim(-1, -3).float() / 255.0


def windows(data: dict, cfg: ReacherConfig, g: torch.Generator):
    """A batch of training windows: observations (B, sequence + 1, 3 * history, 64, 64) (an
    episode's first frame stands in for the frames before it: the arm starts at rest), actions and
    rewards (B, sequence, ...)."""
    n, T = data["actions"].shape[:2]
    ep = torch.randint(n, (cfg.batch,), generator=g)
    t0 = torch.randint(T - cfg.sequence + 1, (cfg.batch,), generator=g)
    idx = t0[:, None] + torch.arange(cfg.sequence)
    frame_idx = (t0[:, None] + torch.arange(-(cfg.history - 1), cfg.sequence + 1)).clamp_min(0)
    frames = stack_history(to_images(data["frames"][ep[:, None], frame_idx]), cfg.history)
    return frames, data["actions"][ep[:, None], idx], data["rewards"][ep[:, None], idx]


def train_one(cfg: ReacherConfig, kind: str, seed: int, run_dir: str, folder: str, device: str = "cpu",
              threads: int | None = None) -> dict:
    """Train one world model; checkpoint every ``eval_every`` steps to ``run_dir`` and resume there."""
    set_threads(threads)
    run_dir = Path(run_dir)
    done = run_dir / f"{kind}_seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    data = load_data(Path(folder), cfg)
    kwargs = model_kwargs(cfg, kind)
    torch.manual_seed(seed)
    model = build(kind, kwargs).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: warmup_cosine(k, 50, cfg.steps))
    g = torch.Generator().manual_seed(seed)
    state_path = run_dir / f"{kind}_seed{seed}.state.pt"
    curve, step, train_time = [], 0, 0.0
    if state_path.exists():
        state = safe_load(state_path, "reacher training state")
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        g.set_state(state["rng"])
        curve, step, train_time = state["curve"], state["step"], state["train_time_s"]
    bar = tqdm(total=cfg.steps, initial=step, desc=f"reacher {kind} seed {seed}", disable=None)
    running: list[list[float]] = []
    while step < cfg.steps:
        model.train()
        start = time.time()
        frames, actions, rewards = (x.to(device) for x in windows(data, cfg, g))
        ar = 0 if step < cfg.warmup_ar else cfg.sequence - 1   # teacher forcing first, then autoregressive
        out = world_model_loss(model, frames, actions, rewards, ar_steps=ar, recon_weight=cfg.recon_weight,
                               recon_focus=cfg.recon_focus)
        if not torch.isfinite(out["total"]):
            raise RuntimeError(f"{kind} seed {seed}: the training loss became {float(out['total'])} at step {step + 1}")
        opt.zero_grad()
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        model.update_target(cfg.ema)
        step, train_time = step + 1, train_time + time.time() - start
        running.append([float(out["prediction"].detach()), float(out["per_step"][-1]), float(out["reward"].detach()),
                        float(out["reconstruction"].detach()) if "reconstruction" in out else float("nan")])
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            m = [float(v) for v in np.mean(running, 0)]
            curve.append({"step": step, "prediction": m[0], "last_step": m[1], "reward": m[2], "reconstruction": m[3],
                          "train_time_s": train_time})
            bar.set_postfix(pred=f"{m[0]:.4f}")
            running = []
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                         "rng": g.get_state(), "curve": curve, "step": step, "train_time_s": train_time}, state_path)
    bar.close()
    model = model.cpu().eval()
    row = {"model": kind, "seed": seed, "params": count_parameters(model), "dynamics_params": model.dynamics_parameters(),
           "kwargs": kwargs, "curve": curve, "train_time_s": train_time, "threads": torch.get_num_threads()}
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": kind, "kwargs": kwargs, "model": model.state_dict(),
                 "seed": seed, "action_repeat": cfg.action_repeat}, run_dir / f"{kind}_seed{seed}.pt")
    atomic_write_text(json.dumps(row), done)
    return row


def _ridge_fit(X: torch.Tensor, Y: torch.Tensor, ridge: float):
    """Centred ridge regression Y ~ X, the penalty relative to the mean feature variance: a predictor."""
    mx, my = X.mean(0), Y.mean(0)
    A = (X - mx).T @ (X - mx)
    W = torch.linalg.solve(A + ridge * A.diagonal().mean() * torch.eye(len(A), dtype=A.dtype), (X - mx).T @ (Y - my))
    return lambda Z: my + (Z - mx) @ W


def _r2(Y: torch.Tensor, pred: torch.Tensor) -> float:
    return float(1 - (Y - pred).pow(2).sum() / (Y - Y.mean(0)).pow(2).sum())


def _ridge_r2(Xtr: torch.Tensor, Ytr: torch.Tensor, Xte: torch.Tensor, Yte: torch.Tensor, ridge: float) -> float:
    return _r2(Yte, _ridge_fit(Xtr, Ytr, ridge)(Xte))


def _encode_episodes(model: WorldModel, frames: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """Latents (N, T+1, D, h, w) of stored episodes' frames (N, T+1, H, W, 3)."""
    per = max(1, chunk // frames.shape[1])
    return torch.cat([model.encode(episode_observations(frames[i : i + per], model.history).flatten(0, 1))
                      .unflatten(0, (len(frames[i : i + per]), -1)) for i in range(0, len(frames), per)])


def _split(n: int, held_out: float) -> int:
    return max(2, min(n - 1, round(n * (1 - held_out))))


@torch.no_grad()
def pose_probe(model: WorldModel, data: dict, held_out: float = 0.25, ridges=(1e-3, 1e-2, 1e-1, 1.0)) -> float:
    """Whether a latent sees the arm: R^2 of a ridge regression from the flattened latent of a
    stored frame to (sin, cos) of both joint angles, fitted on the first episodes and scored on the
    last ``held_out`` fraction (1 = the pose is a linear function of the latent, <= 0 = no better
    than the mean). The ridge weight (relative to the mean feature variance) is chosen on the last
    fifth of the fitting episodes."""
    n = len(data["frames"])
    if n < 5:
        return float("nan")
    X = _encode_episodes(model, data["frames"]).flatten(2).double()
    q = data["qpos"]
    Y = torch.cat([q.sin(), q.cos()], -1)
    split = _split(n, held_out)
    inner = max(1, min(split - 1, round(split * 0.8)))
    best = max(ridges, key=lambda r: _ridge_r2(X[:inner].flatten(0, 1), Y[:inner].flatten(0, 1),
                                               X[inner:split].flatten(0, 1), Y[inner:split].flatten(0, 1), r))
    return _ridge_r2(X[:split].flatten(0, 1), Y[:split].flatten(0, 1), X[split:].flatten(0, 1), Y[split:].flatten(0, 1), best)


@torch.no_grad()
def latent_pose_error(model: WorldModel, data: dict, horizons=(0, 1, 2, 5), held_out: float = 0.25,
                      chunk: int = 500, seed: int = 0) -> dict:
    """What the planner sees: for every start of the last ``held_out`` fraction of the stored
    episodes, the latent predicted open-loop k actions ahead with the recorded actions (k = 0: the
    encoded frame itself) is matched to its nearest encoded frame of the other episodes (squared
    latent distance, as in the CEM cost), and the joint-angle error of that frame's pose against the
    pose actually reached is measured. Returns, per k, the mean over starts of the larger joint's
    error in radians, and under ``"chance"`` the same error for a random frame of the other
    episodes instead of the nearest."""
    frames, actions, q = data["frames"], data["actions"], data["qpos"].numpy()
    n = len(frames)
    if n < 5:
        return {k: float("nan") for k in (*horizons, "chance")}
    Z = _encode_episodes(model, frames, chunk)
    split = _split(n, held_out)
    keys, key_pose = Z[:split].flatten(0, 1).flatten(1), q[:split].reshape(-1, q.shape[-1])
    T, out = actions.shape[1], {}
    for k in horizons:
        z0 = Z[split:, : T - k + 1].flatten(0, 1)
        if k > 0:
            acts = torch.stack([actions[split:, t : t + k] for t in range(T - k + 1)], 1).flatten(0, 1)
            z0 = torch.cat([model.rollout(z0[i : i + chunk], acts[i : i + chunk])[:, -1] for i in range(0, len(z0), chunk)])
        nearest = torch.cat([torch.cdist(z0[i : i + chunk].flatten(1), keys).argmin(-1) for i in range(0, len(z0), chunk)])
        reached = q[split:, k:].reshape(-1, q.shape[-1])
        out[k] = float(angle_distance(key_pose[nearest.numpy()], reached).max(-1).mean())
    held = q[split:].reshape(-1, q.shape[-1])
    pick = np.random.default_rng(seed).integers(len(key_pose), size=len(held))
    out["chance"] = float(angle_distance(key_pose[pick], held).max(-1).mean())
    return out


def load_checkpoint(path: str | Path) -> tuple[WorldModel, dict]:
    return load_model_blob(path, CHECKPOINT_FORMAT, "reacher checkpoint", build)


# ------------------------------------------------------------------------------------ evaluation

def _image(frame: np.ndarray) -> torch.Tensor:
    return to_images(torch.from_numpy(frame.copy()))[None]


def run_episode(cfg: ReacherConfig, policy: str, seed: int, model: WorldModel | None = None) -> dict:
    """One goal-reaching episode on env seed ``seed``: success, steps used, return."""
    env = Reacher(seed, action_repeat=cfg.action_repeat, render=policy == "model")
    frame = env.reset()
    goal = env.sample_goal(cfg.goal_steps)
    z_goal = model.observe(_image(env.render_at(goal))) if policy == "model" else None
    g = torch.Generator().manual_seed(seed)
    plan, ret, previous = None, 0.0, None
    for t in range(cfg.budget):
        if policy == "random":
            a = env.rng.uniform(-1, 1, 2)
        else:
            with torch.no_grad():
                cost = (env.oracle_cost(goal) if policy == "oracle"
                        else latent_cost(model, model.observe(_image(frame), previous), z_goal))
                plan = cem_plan(cost, cfg.horizon, 2, cfg.population, cfg.elites, cfg.iterations, g,
                                mean=None if plan is None else torch.cat([plan[1:], plan[-1:]]))
            a = plan[0].numpy()
        previous = None if frame is None else _image(frame)
        frame, _ = env.step(a)
        err = float(angle_distance(env.qpos(), goal).max())
        ret -= err
        if err < 0.05:
            return {"success": True, "steps": t + 1, "return": ret}
    return {"success": False, "steps": cfg.budget, "return": ret}


def evaluate(cfg: ReacherConfig, policy: str, seed: int, episodes: int, model: WorldModel | None = None) -> dict:
    t0 = time.time()
    rows = [run_episode(cfg, policy, seed + k, model) for k in tqdm(range(episodes), desc=f"eval {policy}", disable=None)]
    return {"success_rate": float(np.mean([r["success"] for r in rows])),
            "mean_return": float(np.mean([r["return"] for r in rows])), "episodes": episodes, "seed": seed,
            "wall_time_s": round(time.time() - t0, 1),
            "success_steps": [r["steps"] if r["success"] else None for r in rows]}


# -------------------------------------------------------------------------------------- commands

def _config(args) -> ReacherConfig:
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    cfg.validate()
    return cfg


def cmd_collect(args) -> Path:
    cfg = _config(args)
    folder = data_dir(default_out(args.out, args.default_results), cfg)
    bar = tqdm(total=cfg.episodes, desc="collect", disable=None)
    t0 = time.time()
    collect(folder, cfg.episodes, cfg.episode_steps, cfg.data_seed, cfg.action_repeat,
            progress=lambda k: bar.update(k - bar.n))
    bar.close()
    print(json.dumps({"folder": str(folder), "episodes": cfg.episodes, "steps": cfg.episode_steps,
                      "wall_time_s": round(time.time() - t0, 1)}), flush=True)
    return folder


def cmd_train(args) -> None:
    cfg = _config(args)
    kinds = check_models(args.models, MODELS)
    check_device(args.device)
    counts = {k: build(k, model_kwargs(cfg, k)).dynamics_parameters() for k in kinds}
    if "metriplector" in kinds:
        check_parity(counts, counts["metriplector"], "metriplector")
    print("dynamics parameters: " + ", ".join(f"{k} {n}" for k, n in counts.items()), flush=True)
    out = default_out(args.out, args.default_results)
    start = time.time()
    folder = cmd_collect(args)
    run_dir = run_folder(out, args.preset, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    calls = {(k, s): (cfg, k, s, str(run_dir), str(folder), args.device) for s in args.seeds for k in kinds}
    done = run_jobs(train_one, calls, args.jobs)
    rows = [done[key] for key in calls]
    data = load_data(folder, cfg)
    for r in rows:  # every trained model and the references, on the same fresh episodes
        model, _ = load_checkpoint(run_dir / f"{r['model']}_seed{r['seed']}.pt")
        r["eval"] = evaluate(cfg, "model", args.eval_seed, cfg.eval_episodes, model)
        r["pose_r2"] = pose_probe(model, data)
    refs = {p: evaluate(cfg, p, args.eval_seed, cfg.eval_episodes) for p in ("oracle", "random")}
    text = table(cfg, args.preset, rows, refs, command_line(args.prog, args.argv), time.time() - start, args.jobs)
    if args.save:
        stem = result_stem(f"reacher_{args.preset}", args)
        write_results(out, stem, text, {"rows": rows, "references": refs}, cfg)
        figures(cfg, rows, run_dir, data, out, stem, refs)
        if args.ship:
            seed = min(args.seeds)
            for kind in kinds:
                atomic_save(safe_load(run_dir / f"{kind}_seed{seed}.pt", "reacher checkpoint"),
                            Path(args.checkpoints) / f"reacher_{kind}.pt")
    print(text)


def table(cfg: ReacherConfig, preset: str, rows: list[dict], refs: dict, command: str, wall: float, jobs: int) -> str:
    lines = [f"# Reacher goal reaching ({preset} preset): Metriplector world model + CEM against references", "",
             command, machine_line(wall, jobs),
             f"- data: {cfg.episodes} random-policy episodes of {cfg.episode_steps} actions (action repeat "
             f"{cfg.action_repeat}); training {cfg.steps} steps of {cfg.batch} windows of {cfg.sequence} actions, "
             f"autoregressive after step {cfg.warmup_ar}",
             f"- evaluation: {cfg.eval_episodes} fresh episodes, goal {cfg.goal_steps * cfg.action_repeat} physics steps of "
             f"random torques away, budget "
             f"{cfg.budget} actions, success = both joints within 0.05 rad; CEM {cfg.population} candidates, "
             f"{cfg.elites} elites, {cfg.iterations} iterations, horizon {cfg.horizon}", "",
             "- pose probe: R^2 of a ridge regression from the latent to (sin, cos) of both joint angles, fitted on "
             "the first 75% of the stored episodes and scored on the rest (does the latent see the arm?)", "",
             "| planner's model | params (dynamics) | seed | success | mean return | pose probe R^2 | train time (s) | eval time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["eval"]
        lines.append(f"| {r['model']} | {r['params']} ({r['dynamics_params']}) | {r['seed']} | "
                     f"{100 * e['success_rate']:.0f}% | {e['mean_return']:.2f} | {r.get('pose_r2', float('nan')):.3f} | "
                     f"{r['train_time_s']:.0f} | {e['wall_time_s']:.0f} |")
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]
        if len(mine) > 1:
            succ = np.array([r["eval"]["success_rate"] for r in mine])
            ret = np.array([r["eval"]["mean_return"] for r in mine])
            r2 = np.array([r.get("pose_r2", float("nan")) for r in mine])
            lines.append(f"| {kind} | {mine[0]['params']} ({mine[0]['dynamics_params']}) | mean ± std of {len(mine)} | "
                         f"{100 * succ.mean():.0f} ± {100 * succ.std():.0f}% | {ret.mean():.2f} ± {ret.std():.2f} | "
                         f"{r2.mean():.3f} ± {r2.std():.3f} | {np.mean([r['train_time_s'] for r in mine]):.0f} | |")
    for p, e in refs.items():
        lines.append(f"| {p} (reference) | | | {100 * e['success_rate']:.0f}% | {e['mean_return']:.2f} | | | {e['wall_time_s']:.0f} |")
    lines += ["| paper (Oprisa & Toth 2026), reference, not ours, its own protocol | 913K | | 88% | | | | |", ""]
    return "\n".join(lines) + "\n"


def episode_observations(frames: torch.Tensor, history: int) -> torch.Tensor:
    """Stored uint8 frames (N, T+1, H, W, 3) -> observations (N, T+1, 3 * history, H, W), the
    first frame standing in for the frames before it (the arm starts at rest)."""
    images = to_images(frames)
    return stack_history(torch.cat([images[:, :1]] * (history - 1) + [images], 1), history)


@torch.no_grad()
def figures(cfg: ReacherConfig, rows: list[dict], run_dir: Path, data: dict, out: Path, stem: str,
            refs: dict | None = None, episode: int = -1, pool: int = 40) -> None:
    """Training curves, and an open-loop rollout of each model along one stored episode: the true
    frames against, per model, the decoded predicted latent (a model with a decoder) or else the
    stored frame whose target latent is nearest to it (the pool is ``pool`` other episodes)."""
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        steps = [c["step"] for c in r["curve"]]
        axes[0].semilogy(steps, [c["prediction"] for c in r["curve"]], label=f"{r['model']} seed {r['seed']}")
        axes[1].semilogy(steps, [c.get("reconstruction", float("nan")) for c in r["curve"]], label=f"{r['model']} seed {r['seed']}")
    for ax in axes:
        ax.axvline(cfg.warmup_ar, color="gray", lw=0.8)
        ax.legend(fontsize=7)
    axes[0].set(xlabel="training step (gray: autoregressive from here)", ylabel="latent prediction MSE", title="training")
    axes[1].set(xlabel="training step", ylabel="reconstruction term (moving pixels weighted)", title="decoder (if any)")
    fig.tight_layout()
    fig.savefig(out / f"{stem}_curves.png", dpi=110)
    plt.close(fig)
    ep = episode % len(data["frames"])
    others = [k for k in range(len(data["frames"])) if k != ep][:pool]
    pool_frames = data["frames"][others].flatten(0, 1)
    T = min(10, cfg.episode_steps)
    models = {r["model"]: load_checkpoint(run_dir / f"{r['model']}_seed{r['seed']}.pt")[0]
              for r in rows if r["seed"] == min(x["seed"] for x in rows)}
    fig, axes = plt.subplots(1 + len(models), T + 1, figsize=(1.2 * (T + 1), 1.35 * (1 + len(models))))
    for t in range(T + 1):
        axes[0, t].imshow(data["frames"][ep, t].numpy())
        axes[0, t].set_title(f"t={t}", fontsize=7)
    for row, (kind, model) in enumerate(models.items(), start=1):
        z = model.encode(episode_observations(data["frames"][ep : ep + 1, :1], model.history)[:, 0])
        zs = torch.cat([z[:, None], model.rollout(z, data["actions"][ep : ep + 1, :T])], 1)[0]
        if model.decoder is not None:
            shown = (model.decoder(zs).clamp(0, 1).movedim(1, -1) * 255).to(torch.uint8)
        else:
            obs = episode_observations(data["frames"][others], model.history).flatten(0, 1)
            keys = torch.cat([model.target(obs[i : i + 500]) for i in range(0, len(obs), 500)]).flatten(1)
            shown = pool_frames[torch.cdist(zs.flatten(1), keys).argmin(-1)]
        for t in range(T + 1):
            axes[row, t].imshow(shown[t].numpy())
        axes[row, 0].set_ylabel(kind + (" (decoded)" if model.decoder is not None else " (nearest)"), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("open-loop rollout from the first frame: true frames (top), each model's prediction", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_rollout.png", dpi=110)
    plt.close(fig)
    atomic_write_text(probe_table(rows, run_dir, data), out / f"{stem}_probe.md")
    if refs is not None:
        success_figure(cfg, rows, refs, out / f"{stem}_success.png")


def success_figure(cfg: ReacherConfig, rows: list[dict], refs: dict, path: Path) -> None:
    """The fraction of evaluation episodes that reached the goal within k actions, per planner."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    k = np.arange(1, cfg.budget + 1)
    colours = {"metriplector": "C0", "conv": "C1"}
    curves = [(f"{r['model']} seed {r['seed']}", r["eval"], dict(color=colours.get(r["model"]), alpha=0.8)) for r in rows]
    curves += [(f"{p} (reference)", e, dict(color="k" if p == "oracle" else "gray", ls="--")) for p, e in refs.items()]
    for label, e, style in curves:
        steps = np.array([s for s in e["success_steps"] if s is not None])
        ax.step(k, [(steps <= j).sum() / e["episodes"] for j in k], where="post", label=label, **style)
    ax.set(xlabel="actions taken", ylabel="fraction of episodes at the goal", ylim=(0, 1.02),
           title=f"goal reaching, {refs[next(iter(refs))]['episodes']} fresh episodes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def probe_table(rows: list[dict], run_dir: Path, data: dict, horizons=(0, 1, 2, 5)) -> str:
    """The pose diagnostics of every trained model (:func:`pose_probe`, as recorded by ``train``
    when the row has it, and :func:`latent_pose_error`)."""
    lines = ["# Reacher world models: does the latent see the arm, and do the dynamics move it?", "",
             "- pose probe R^2: ridge regression from the encoded latent to (sin, cos) of the joint angles, "
             "fitted on the first 75% of the stored random-policy episodes, scored on the rest",
             "- latent pose error (rad): the latent predicted k actions ahead (k = 0: the encoded frame) is matched "
             "to its nearest encoded frame of the fitting episodes; the larger joint's angle error of that frame "
             "against the pose reached, mean over every start of the held-out episodes; `chance` matches a random frame",
             "", "| model | seed | pose probe R^2 | " + " | ".join(f"error k={k}" for k in horizons) + " | chance |",
             "|---|---|---|" + "---|" * (len(horizons) + 1)]
    for r in rows:
        model, _ = load_checkpoint(run_dir / f"{r['model']}_seed{r['seed']}.pt")
        err = latent_pose_error(model, data, horizons)
        r2 = r["pose_r2"] if "pose_r2" in r else pose_probe(model, data)
        lines.append(f"| {r['model']} | {r['seed']} | {r2:.3f} | "
                     + " | ".join(f"{err[k]:.3f}" for k in horizons) + f" | {err['chance']:.3f} |")
    return "\n".join(lines) + "\n"


def cmd_figure(args) -> None:
    cfg = _config(args)
    out = default_out(args.out, args.default_results)
    run_dir = run_folder(out, args.preset, cfg)
    payload = out / f"reacher_{args.preset}.json"
    if not payload.is_file():
        raise UsageError(f"no results at {payload}: run 'train --preset {args.preset}' first")
    results = json.loads(payload.read_text())
    rows, refs = results["rows"], results["references"]
    evals = [(r["eval"], lambda r=r: load_checkpoint(run_dir / f"{r['model']}_seed{r['seed']}.pt")[0], "model")
             for r in rows] + [(e, lambda: None, p) for p, e in refs.items()]
    if any("success_steps" not in e for e, _, _ in evals):  # results from before the step counts were stored
        for e, model, policy in evals:
            again = evaluate(cfg, policy, e["seed"], e["episodes"], model())
            if again["success_rate"] != e["success_rate"]:
                print(f"note: re-evaluating {policy} gave success {again['success_rate']:.2f}, recorded "
                      f"{e['success_rate']:.2f}", flush=True)
            e["success_steps"] = again["success_steps"]
        atomic_write_text(json.dumps(results, indent=1, default=float), payload)
    figures(cfg, rows, run_dir, load_data(data_dir(out, cfg), cfg), out, f"reacher_{args.preset}", refs)
    print(f"wrote {out}/reacher_{args.preset}_curves.png, _rollout.png, _success.png and _probe.md", flush=True)


def cmd_eval(args) -> None:
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    cfg = _config(args)
    if args.stored is not None:
        return eval_stored(args, cfg)
    model = None
    if args.policy == "model":
        model, blob = load_checkpoint(args.checkpoint)
        cfg = dataclasses.replace(cfg, action_repeat=blob["action_repeat"])
    line = {"policy": args.policy, **evaluate(cfg, args.policy, args.seed, args.episodes, model)}
    if model is not None:
        line.update(model=blob["kind"], checkpoint=str(args.checkpoint))
    print(json.dumps(line))


def eval_stored(args, cfg: ReacherConfig) -> None:
    """``eval --stored DIR``: the pose diagnostics of a checkpoint on episodes the user recorded
    (one ``.npz`` per episode as ``collect`` writes them, with frames; at least 5, of one length)."""
    folder = Path(args.stored)
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if len(files) < 5:
        raise UsageError(f"--stored {folder}: need a folder with at least 5 episode .npz files, found {len(files)}")
    try:
        eps = [load_episode(f) for f in files]
    except ValueError as err:
        raise UsageError(str(err)) from None
    model, blob = load_checkpoint(args.checkpoint)
    for f, ep in zip(files, eps):
        if ep["frames"].shape[1:] != (model.image, model.image, 3) or len(ep["actions"]) != len(eps[0]["actions"]):
            raise UsageError(f"{f}: need {model.image}x{model.image} RGB frames and {len(eps[0]['actions'])} actions like "
                             f"{files[0].name}, got frames {ep['frames'].shape} and {len(ep['actions'])} actions")
    data = stack_episodes(eps, dataclasses.replace(cfg, action_repeat=blob["action_repeat"]))
    err = latent_pose_error(model, data)
    print(json.dumps({"stored": str(folder), "episodes": len(eps), "model": blob["kind"], "checkpoint": str(args.checkpoint),
                      "pose_r2": pose_probe(model, data), **{f"pose_error_{k if k == 'chance' else f'k{k}'}": v for k, v in err.items()}}))


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics reacher") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    c = sub.add_parser("collect", help="random-policy episodes on disk (resumable)")
    c.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    c.add_run_options(jobs=False)
    t = sub.add_parser("train", help="collect, train both world models, evaluate them with the references")
    add_train_options(t, PRESETS, MODELS, default_checkpoints or str(CHECKPOINTS))
    t.add_argument("--eval-seed", type=int, default=50000, help="first env seed of the evaluation episodes")
    t.add_run_options()
    f = sub.add_parser("figure", help="training curves and open-loop rollouts of a trained preset")
    f.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    f.add_run_options(jobs=False)
    e = sub.add_parser("eval", help="CEM goal reaching with a checkpoint (or a reference policy): one JSON line")
    e.add_argument("--checkpoint", default=str(CHECKPOINTS / "reacher_metriplector.pt"))
    e.add_argument("--policy", choices=POLICIES, default="model")
    e.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="the task and CEM settings")
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--seed", type=int, default=50000, help="first env seed (fresh seeds: not the data's)")
    e.add_argument("--stored", default=None, metavar="DIR",
                   help="instead of planning: the pose probe and latent pose errors of the checkpoint on recorded "
                        "episodes in DIR (.npz files as 'collect' writes them)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    try:
        {"collect": cmd_collect, "train": cmd_train, "eval": cmd_eval, "figure": cmd_figure}[args.cmd](args)
    except ControlUnavailable as err:
        raise UsageError(str(err)) from None


if __name__ == "__main__":
    main(sys.argv[1:])
