"""Figures of adapted models against the truth: phase portraits and the true energy (and entropy)
along their rollouts. Optional: nothing is drawn without matplotlib (:func:`.common.pyplot`)."""

from __future__ import annotations

from pathlib import Path

from ..meta.evaluation import safe_rollout, valid_prefix
from .common import pyplot

__all__ = ["portrait_figure", "energy_figure"]


def _rollout_or_none(f, x0, t, instance):
    """A rollout for a figure, or None (with the reason printed) when the learned field is too stiff."""
    try:
        return safe_rollout(f, x0, t)
    except Exception as exc:  # the same failures evaluate_fields reports as eps_traj = NaN
        print(f"  figure: rollout failed on test instance {instance} ({type(exc).__name__}); curve left out", flush=True)
        return None


def portrait_figure(fields, system, data, path: Path, title: str) -> None:
    """(q, p) portraits of the adapted models' rollouts (dashed) over the true trajectories, for
    the first three test instances."""
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    for ax, (f, i) in zip(axes, list(zip(fields, data.test_ids))[:3]):
        pred = _rollout_or_none(f, data.x[i, :, 0], data.t, i)
        for j in range(data.x.shape[1]):
            ax.plot(data.x[i, j, :, 0], data.x[i, j, :, 1], "k-", lw=1.2, label="true" if j == 0 else None)
            if pred is not None:
                ax.plot(pred[j, :, 0], pred[j, :, 1], "r--", lw=1, label="adapted" if j == 0 else None)
        mu = ", ".join(f"{n}={v:.2f}" for n, v in zip(system.param_names, data.params[i].tolist()))
        ax.set_title(f"test instance {i} ({mu})", fontsize=9)
        ax.set_xlabel("q")
        ax.set_ylabel("p")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_figure(fields, system, data, path: Path, title: str) -> None:
    """True energy (and entropy) along the adapted models' rollouts against the true trajectories;
    a rollout that leaves the state domain is cut there (dotted line)."""
    plt = pyplot()
    if plt is None:
        return
    rows = 2 if system.is_generic else 1
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.6 * rows), squeeze=False)
    for col, (f, i) in enumerate(list(zip(fields, data.test_ids))[:3]):
        mu = data.params[i]
        pred = _rollout_or_none(f, data.x[i, :, 0], data.t, i)
        quantities = [("energy E", system.energy)] + ([("entropy S", system.entropy)] if system.is_generic else [])
        for row, (name, fn) in enumerate(quantities):
            ax = axes[row, col]
            for j in range(min(3, data.x.shape[1])):
                ax.plot(data.t, fn(mu, data.x[i, j]), "k-", lw=1.2, label="true trajectory" if j == 0 else None)
                k = 0 if pred is None else valid_prefix(system, pred[j])
                if k:
                    ax.plot(data.t[:k], fn(mu, pred[j, :k]), "r--", lw=1, label="adapted model" if j == 0 else None)
                if pred is not None and k < len(data.t):
                    ax.axvline(data.t[k], color="r", lw=0.6, ls=":")
            ax.set_xlabel("t")
            ax.set_ylabel(f"true {name}")
            ax.set_title(f"test instance {i}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
