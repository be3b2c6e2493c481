"""DeepMind Control Reacher for the world model: the optional ``[control]`` extra, headless
rendering with cheap settings, goal-reaching episodes and an on-disk episode store.

Install: ``pip install 'sp-dynamics[control]'`` (pins dm-control 1.0.50 and mujoco 3.17.0; mujoco
4.0.0 breaks dm-control 1.0.50). Headless rendering needs a GL backend chosen by ``MUJOCO_GL``
before MuJoCo is imported: ``egl`` (the default here; Debian/Ubuntu packages ``libegl1`` and
``libgl1-mesa-dri``, which also work without a GPU through llvmpipe) or ``osmesa``
(``apt-get install libosmesa6``).

Episodes are stored one ``.npz`` per episode (written atomically): frames (T+1, 64, 64, 3) uint8,
actions (T, 2), rewards (T,), qpos and qvel (T+1, 2). A collection resumes by skipping the
episodes already on disk.

Goal-reaching protocol (after the LeWM ``qpos_match`` criterion the paper uses): from the reset
state, a goal configuration is the joint angles reached after ``goal_steps * action_repeat``
physics steps of uniform random torques redrawn at every physics step (not held for an action's
repeat); the goal frame is rendered at that configuration with zero velocity, and the arm goes back to the start
state. An episode succeeds when, after some decision step within the budget, both joint angles are
within ``tolerance`` (0.05 rad) of the goal (angles compared modulo 2 pi).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sp_dynamics.io import atomic_savez

__all__ = ["ControlUnavailable", "require_control", "Reacher", "angle_distance", "collect_episode",
           "load_episode", "collect"]

MISSING = ("the Reacher world model needs the optional [control] extra: pip install 'sp-dynamics[control]' "
           "(dm-control==1.0.50, mujoco==3.17.0)")
EPISODE_KEYS = ("frames", "actions", "rewards", "qpos", "qvel")


class ControlUnavailable(RuntimeError):
    """dm-control / MuJoCo or a headless GL backend is missing; the message names the fix."""


def require_control():
    """``dm_control.suite``, or ControlUnavailable naming the missing extra."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import suite
    except ImportError as err:
        raise ControlUnavailable(f"{MISSING} ({err})") from None
    return suite


def angle_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| per joint, modulo 2 pi (in [0, pi])."""
    d = np.asarray(a) - np.asarray(b)
    return np.abs((d + np.pi) % (2 * np.pi) - np.pi)


class Reacher:
    """dm_control ``reacher-<difficulty>`` with ``action_repeat`` physics steps per action and
    ``size`` x ``size`` frames rendered without shadows or anti-aliasing."""

    def __init__(self, seed: int, difficulty: str = "easy", action_repeat: int = 5, size: int = 64,
                 render: bool = True):
        if difficulty not in ("easy", "hard"):
            raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
        if action_repeat < 1 or size < 8:
            raise ValueError(f"need action_repeat >= 1 and size >= 8, got {action_repeat} and {size}")
        suite = require_control()
        self.env = suite.load("reacher", difficulty, task_kwargs={"random": seed})
        self.physics = self.env.physics
        vis = self.physics.model.vis.quality
        vis.shadowsize, vis.offsamples = 0, 0
        self.action_repeat, self.size, self.rendering = action_repeat, size, render
        self.rng = np.random.default_rng(seed)

    def frame(self) -> np.ndarray | None:
        if not self.rendering:
            return None
        try:
            return self.physics.render(self.size, self.size, camera_id=0)
        except Exception as err:  # the GL backend failed to start
            gl = os.environ.get("MUJOCO_GL")
            raise ControlUnavailable(
                f"headless rendering failed with MUJOCO_GL={gl} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "install EGL (Debian: libegl1 libgl1-mesa-dri) or OSMesa (libosmesa6, then MUJOCO_GL=osmesa)") from None

    def qpos(self) -> np.ndarray:
        return self.physics.data.qpos[:2].copy()

    def qvel(self) -> np.ndarray:
        return self.physics.data.qvel[:2].copy()

    def reset(self) -> np.ndarray | None:
        self.env.reset()
        return self.frame()

    def step(self, action) -> tuple[np.ndarray | None, float]:
        """Apply ``action`` (2,) in [-1, 1] for ``action_repeat`` physics steps; (frame, summed reward)."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        reward = 0.0
        for _ in range(self.action_repeat):
            reward += float(self.env.step(action).reward or 0.0)
        return self.frame(), reward

    def get_state(self) -> np.ndarray:
        return self.physics.get_state().copy()

    def set_state(self, state: np.ndarray) -> None:
        with self.physics.reset_context():
            self.physics.set_state(state)

    def render_at(self, qpos: np.ndarray) -> np.ndarray | None:
        """The frame of the arm at joint angles ``qpos`` with zero velocity; the state is restored."""
        saved = self.get_state()
        with self.physics.reset_context():
            self.physics.data.qpos[:2] = qpos
            self.physics.data.qvel[:2] = 0.0
        frame = self.frame()
        self.set_state(saved)
        return frame

    def simulate(self, action) -> None:
        """Physics only (no reward, no frame): hold ``action`` for ``action_repeat`` steps."""
        for _ in range(self.action_repeat):
            self.physics.set_control(action)
            self.physics.step()

    def sample_goal(self, goal_steps: int) -> np.ndarray:
        """Joint angles reached from the current state after ``goal_steps * action_repeat`` physics
        steps of random torques, redrawn at every physics step (the state is restored)."""
        saved = self.get_state()
        for _ in range(goal_steps * self.action_repeat):
            self.physics.set_control(self.rng.uniform(-1, 1, 2))
            self.physics.step()
        goal = self.qpos()
        self.set_state(saved)
        return goal

    def oracle_cost(self, goal: np.ndarray):
        """The CEM cost of action sequences (P, H, 2) under the true simulator, from the current
        state: each sequence's smallest squared joint-angle error to ``goal`` over its H actions.
        The state is restored."""
        import torch

        start = self.get_state()

        def cost(actions: "torch.Tensor") -> "torch.Tensor":
            out = []
            for seq in actions.numpy():
                self.set_state(start)
                best = np.inf
                for a in seq:
                    self.simulate(a)
                    best = min(best, float((angle_distance(self.qpos(), goal) ** 2).sum()))
                out.append(best)
            self.set_state(start)
            return torch.tensor(out)

        return cost


def collect_episode(env: Reacher, steps: int) -> dict[str, np.ndarray]:
    """One random-policy episode of ``steps`` actions from a reset."""
    frames, qpos, qvel, actions, rewards = [env.reset()], [env.qpos()], [env.qvel()], [], []
    for _ in range(steps):
        a = env.rng.uniform(-1, 1, 2)
        f, r = env.step(a)
        frames.append(f), qpos.append(env.qpos()), qvel.append(env.qvel()), actions.append(a), rewards.append(r)
    return {"frames": np.stack(frames) if env.rendering else np.zeros((0, env.size, env.size, 3), np.uint8),
            "actions": np.asarray(actions, np.float32), "rewards": np.asarray(rewards, np.float32),
            "qpos": np.asarray(qpos, np.float32), "qvel": np.asarray(qvel, np.float32)}


def load_episode(path: str | Path) -> dict[str, np.ndarray]:
    """An episode file, or a ValueError naming the file when it is corrupt or incomplete."""
    path = Path(path)
    try:
        with np.load(path) as blob:
            ep = {k: blob[k] for k in EPISODE_KEYS}
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"corrupt or incomplete episode file {str(path)!r} ({type(err).__name__}: {err})") from None
    T = len(ep["actions"])
    if len(ep["rewards"]) != T or len(ep["qpos"]) != T + 1 or (len(ep["frames"]) not in (0, T + 1)):
        raise ValueError(f"episode file {str(path)!r} has inconsistent lengths: "
                         + ", ".join(f"{k} {len(v)}" for k, v in ep.items()))
    return ep


def collect(folder: str | Path, episodes: int, steps: int, seed: int, action_repeat: int = 5, size: int = 64,
            render: bool = True, progress=None) -> list[Path]:
    """Random-policy episodes ``episode_<k>.npz`` in ``folder``, episode k on env seed ``seed + k``;
    episodes already on disk are kept (resume)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(episodes):
        path = folder / f"episode_{k:05d}.npz"
        if not path.exists():
            env = Reacher(seed + k, action_repeat=action_repeat, size=size, render=render)
            atomic_savez(path, **collect_episode(env, steps))
        paths.append(path)
        if progress is not None:
            progress(k + 1)
    return paths
