"""One call to train a model on one system instance: :func:`fit`.

Two kinds of data:

* **derivatives** -- states ``x`` (N, n) and their time derivatives ``dx`` (N, n): the loss is
  derivative matching, ``mean |f(x) - dx|^2 / mean |dx|^2`` (a relative squared error);
* **trajectories** -- times ``t`` (T,) and sampled states ``x`` (J, T, n), no derivatives (pass
  ``t=``): every window of ``horizon`` sampling intervals is rolled out from its observed first
  state by a structure-preserving step and compared with the observations (see
  :func:`trajectory_loss`).

The optimiser is full-batch L-BFGS with a strong-Wolfe line search, which for these small,
smooth regression problems reaches errors Adam does not (``experiments/PROTOCOL.md``, "Why the
GENERIC networks did not learn": on a DNO instance Adam stalls near a relative loss of 1e-6 to
1e-3 depending on the learning rate, L-BFGS reaches 1e-7 in the same time). The loss landscape of
GENERIC networks has poor basins -- E, S and the bracket can split the field in ways that need
more state dependence than the bracket has -- so :func:`fit` first tries ``restarts``
initialisations for a few iterations each and continues the best. It stops at ``max_iter``
evaluations, when the loss falls below ``tol``, or on a plateau. A few iterations do not always
tell the basins apart; ``FitConfig(starts=k)`` runs k whole fits from independent
initialisations and keeps the one with the lowest final data loss.

Example::

    model = GENERICNet(3).double()
    result = fit(model, x, dx)                     # derivative matching
    result = fit(model, xs, t=t)                   # trajectories (J, T, n) only
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor, nn

from ._checks import check_finite
from .losses import (TRAJECTORY_METHODS, WEIGHTINGS, _generic_derivative_loss, _uniform_step, _weights,
                     derivative_loss, energy_consistency, entropy_orientation, shooting_loss, shooting_starts,
                     trajectory_loss)
from .optim import lbfgs_closure, make_lbfgs
from .nn import standardize_inputs

__all__ = ["FitConfig", "FitResult", "fit", "trajectory_loss", "shooting_loss", "derivative_loss",
           "entropy_orientation", "energy_consistency", "levenberg_marquardt", "reinitialize", "orient_entropy"]



@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit`; the defaults reach the accuracies in ``experiments/results/fit_*.md``.

    Attributes:
        max_iter: L-BFGS function evaluations of the main run.
        restarts: initialisations tried (the model as given is the first); the one with the
            lowest loss after ``restart_iter`` evaluations is continued. 1 = no restarts.
        restart_iter: evaluations each initialisation gets before the choice.
        starts: whole fits (restarts, main run and Levenberg-Marquardt phase each) from
            independent initialisations; the one with the lowest final data loss (derivative or
            trajectory loss without penalties, :attr:`FitResult.data_loss`) is kept.
            Start 0 is the fit ``starts=1`` gives (the model as given, ``seed``); start s > 0
            re-initialises the model and uses seed ``seed + 10007 s``. Costs k times the time.
            On the gas containers the final training loss largely separates good from bad
            basins where short restarts do not; 3 starts fixed 2 of the 4 worst default fits
            (``experiments/PROTOCOL.md``, "Gas containers: whole-fit starts").
        start_good_loss: with ``starts`` > 1, no further start is tried once a start ends at a
            data loss at or below this value (0, the default: every start runs). Saves the
            extra starts on fits that landed in a good basin at once; the choice stays by
            training loss alone. Among fits that all end low (gas containers, data losses of
            4e-7 to 2e-6) the training loss no longer ranks them by test error: running every
            start there gave lower mean errors and the same number of fits meeting the targets
            (``experiments/PROTOCOL.md``, "Gas containers: every start run").
        history: L-BFGS memory.
        chunk: evaluations per L-BFGS call; progress, plateau test and callback run between calls.
        plateau_window, plateau_rtol: stop when the loss fell by less than the fraction
            ``plateau_rtol`` over the last ``plateau_window`` evaluations.
        tol: stop when the loss is below this value.
        weighting: ``"global"`` (errors relative to the mean |dx|^2) or ``"coordinate"`` (each
            coordinate relative to its own mean square, so slow coordinates such as an entropy
            rate weigh as much as fast ones).
        standardize: set the model's input standardisation (:class:`~sp_dynamics.nn.Standardize`)
            from the data if not set yet.
        seed: seeds the re-initialisations of the restarts (the global RNG is restored after).
        entropy_penalty: weight of ``mean relu(-dS/dt)^2 / mean (dS/dt)^2`` along the data, for
            models with an entropy (see :func:`entropy_orientation`). It is zero for every model
            that fits the data, since a GENERIC model's entropy never decreases along its own
            flow; it steers training away from entropies that decrease along the data.
        method, horizon, substeps: trajectory loss only (:func:`trajectory_loss`).
        free_starts: trajectory loss only: multiple shooting with free initial states
            (:func:`~sp_dynamics.losses.shooting_loss`). The trajectories are cut into windows of
            ``horizon`` intervals, and each window starts from a state fitted together with the
            model, not from its observed (noisy) first sample. For noisy states; use a horizon of
            several intervals and ``method="rk4"``.
        lm_iter: Levenberg-Marquardt iterations on the derivative-matching residuals after
            L-BFGS (derivative data only; 0 = none). Each solves the damped Gauss-Newton
            system with the exact per-sample Jacobian, so residuals that weigh little in the
            loss (a slow entropy rate next to fast mechanics) are fitted too, which L-BFGS
            leaves undone (``experiments/PROTOCOL.md``, "Gas containers"). Costs about
            ``N n P min(N n, P)`` flops per iteration (N states, n coordinates, P parameters):
            seconds for one benchmark instance, too much for large data sets.
        lm_points: if > 0, each Levenberg-Marquardt iteration forms its Jacobian on a fresh
            random subset of that many states (seeded by ``seed``) and accepts steps on all the
            data; 0 (default) uses every state. Cheaper, but far weaker: on a gas-containers
            instance 512 of 1010 states stalled after 4 iterations where all states kept
            descending (``experiments/PROTOCOL.md``, "Gas containers").
        energy_penalty: weight of :func:`energy_consistency` along the data, for models with an
            energy and an entropy: zero for every model that fits the data (a GENERIC model's
            energy is constant along its own flow), it tells the energy network directly that
            its level sets must contain the observed velocities.
        polish_iter: L-BFGS evaluations on the data term alone after the main run, with the
            penalties (``entropy_penalty``, ``energy_penalty``) dropped; 0 (default) = none, and
            nothing to do for a model without penalties. The penalties steer the main run into a
            good basin, and at their weight they also hold the data fit back: on the 10 gas-containers
            test instances (seed 0, ``energy_penalty=10``, wall inputs), 3000 polishing evaluations
            took the median final data loss from 5.4e-6 to 9.2e-7 and the fits with eps_traj and
            data-region eps_field both <= 1e-2 from 4 to 7 (``experiments/PROTOCOL.md``, "Gas
            containers: wall inputs, the energy term and a polishing phase").
    """

    max_iter: int = 3000
    restarts: int = 4
    restart_iter: int = 100
    starts: int = 1
    start_good_loss: float = 0.0
    history: int = 50
    chunk: int = 50
    plateau_window: int = 500
    plateau_rtol: float = 0.02
    tol: float = 0.0
    weighting: str = "global"
    standardize: bool = True
    seed: int = 0
    entropy_penalty: float = 1.0
    method: str = "implicit_midpoint"
    horizon: int = 1
    substeps: int = 1
    free_starts: bool = False
    lm_iter: int = 0
    lm_points: int = 0
    energy_penalty: float = 0.0
    polish_iter: int = 0

    def validate(self) -> None:
        for name in ("max_iter", "restarts", "restart_iter", "starts", "history", "chunk", "plateau_window", "horizon", "substeps"):
            if getattr(self, name) < 1:
                raise ValueError(f"FitConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.method not in TRAJECTORY_METHODS:
            raise ValueError(f"FitConfig.method must be one of {TRAJECTORY_METHODS}, got {self.method!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"FitConfig.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0 <= self.plateau_rtol < 1:
            raise ValueError(f"FitConfig.plateau_rtol must be in [0, 1), got {self.plateau_rtol}")
        if self.entropy_penalty < 0:
            raise ValueError(f"FitConfig.entropy_penalty must be >= 0, got {self.entropy_penalty}")
        if self.energy_penalty < 0:
            raise ValueError(f"FitConfig.energy_penalty must be >= 0, got {self.energy_penalty}")
        if self.lm_iter < 0:
            raise ValueError(f"FitConfig.lm_iter must be >= 0, got {self.lm_iter}")
        if not self.start_good_loss >= 0:  # also refuses NaN
            raise ValueError(f"FitConfig.start_good_loss must be >= 0, got {self.start_good_loss}")
        if self.polish_iter < 0:
            raise ValueError(f"FitConfig.polish_iter must be >= 0, got {self.polish_iter}")
        if self.lm_points < 0:
            raise ValueError(f"FitConfig.lm_points must be >= 0, got {self.lm_points}")
        if self.tol < 0:
            raise ValueError(f"FitConfig.tol must be >= 0, got {self.tol}")


@dataclass
class FitResult:
    """What :func:`fit` did: the loss after every evaluation of the main run (then after every
    polishing evaluation and Levenberg-Marquardt iteration: the data term alone), the loss each restart
    reached, the chosen restart, the number of L-BFGS evaluations and of Levenberg-Marquardt
    iterations, wall time and why it stopped. ``data_loss`` is the data term alone (derivative
    or trajectory loss, no penalties) at the final parameters. With ``FitConfig(starts=k)`` these
    describe the kept start, ``start_losses`` holds every start's ``data_loss``, ``chosen_start``
    the kept one, and ``seconds`` is the time of all starts together."""

    losses: list[float]
    restart_losses: list[float]
    chosen: int
    evaluations: int
    seconds: float
    stopped: str
    config: FitConfig = field(repr=False, default_factory=FitConfig)
    lm_iterations: int = 0
    data_loss: float = math.nan
    start_losses: list[float] = field(default_factory=list)
    chosen_start: int = 0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def _last_linear(net: nn.Module) -> nn.Linear | None:
    """The output layer of an entropy network (a plain MLP, a modulated MLP's head, or either
    behind a :class:`~sp_dynamics.nn.ScalarFunction` / Standardize wrapper)."""
    head = getattr(net, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@torch.no_grad()
def orient_entropy(model: nn.Module, x: Tensor, dx: Tensor, z: Tensor | None = None) -> bool:
    """Flip a learned entropy network's sign if its entropy *decreases* along the data.

    The data say in which direction entropy grows (``dS/dt = grad S . dx/dt`` must be >= 0 on
    average). A network initialised the other way round has to pass ``grad S = 0`` to turn
    around, where the bracket's dissipation vanishes; it then settles in a basin with no
    dissipation at all (on the DNO, a relative loss of about 2e-2 from every such start). Negating
    the output layer before training removes that barrier. ``x``, ``dx``: states and time
    derivatives (or increments) (..., n); ``z``: latents (K, k) of a latent model, with x and dx
    (K, N, n). Returns whether the sign was flipped; models without a learned ``entropy_net``
    are left alone.
    """
    net = getattr(model, "entropy_net", None)
    last = _last_linear(net) if isinstance(net, nn.Module) else None
    if last is None or not hasattr(model, "entropy") or (z is None and not _takes_state_only(model)):
        return False
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        entropy = model.entropy(xg) if z is None else model.entropy(xg, z)
        (g,) = torch.autograd.grad(entropy.sum(), xg)
    if float((g * dx).sum()) >= 0:
        return False
    last.weight.neg_()
    if last.bias is not None:
        last.bias.neg_()
    return True


def _has_entropy(model: nn.Module) -> bool:
    return hasattr(model, "entropy") and _takes_state_only(model)


def _takes_state_only(model: nn.Module) -> bool:
    import inspect

    try:
        return len(inspect.signature(model.entropy).parameters) == 1
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# restarts
# ---------------------------------------------------------------------------------------------


def reinitialize(model: nn.Module) -> nn.Module:
    """Draw fresh parameters for every submodule (from the global RNG), in place.

    Uses each module's ``reset_parameters``; children are reset before their parents, so a
    parent can override its children's default initialisation (e.g. a zero-initialised head).
    Raises ``ValueError`` naming a module that owns parameters but cannot reset them."""
    for module in reversed(list(model.modules())):
        owns = any(True for _ in module.parameters(recurse=False))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif owns:
            raise ValueError(f"cannot re-initialise {type(module).__name__} (no reset_parameters); "
                             "use FitConfig(restarts=1)")
    return model


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


def _check_data(model: nn.Module, x: Tensor, dx: Tensor | None, t: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    try:
        param = next(model.parameters())
    except StopIteration:
        raise ValueError("fit: the model has no parameters to train") from None
    dtype, device = param.dtype, param.device
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    x = x.to(dtype=dtype, device=device)
    check_finite(x, "fit: states x")
    dim = getattr(model, "dim", x.shape[-1])
    if x.ndim < 2 or x.shape[-1] != dim:
        raise ValueError(f"fit: states must have shape (..., {dim}), got {tuple(x.shape)}")
    if t is None:
        if dx is None:
            raise ValueError("fit: pass derivatives dx, or times t= to learn from trajectories")
        dx = torch.as_tensor(dx).to(dtype=dtype, device=device)
        check_finite(dx, "fit: derivatives dx")
        if dx.shape != x.shape:
            raise ValueError(f"fit: x and dx must have the same shape, got {tuple(x.shape)} and {tuple(dx.shape)}")
        return x.reshape(-1, dim), dx.reshape(-1, dim), None
    if dx is not None:
        raise ValueError("fit: pass either derivatives dx or times t, not both")
    t = torch.as_tensor(t).to(dtype=dtype, device=device)
    check_finite(t, "fit: times t")
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or t.ndim != 1 or x.shape[1] != t.shape[0]:
        raise ValueError(f"fit: trajectories must be (J, T, n) with times (T,), got {tuple(x.shape)} and {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError("fit: trajectories need at least two sampled times")
    _uniform_step(t)
    return x, None, t


def fit(model: nn.Module, x: Tensor, dx: Tensor | None = None, *, t: Tensor | None = None,
        config: FitConfig | None = None, progress: bool | None = None,
        callback: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``model`` in place on one system instance.

    Args:
        model: any ``(t, x)`` vector field module (:class:`~sp_dynamics.HamiltonianNN`,
            :class:`~sp_dynamics.GENERICNet`, ...); trained in its own dtype (use float64).
        x: states (N, n) with ``dx``, or trajectories (J, T, n) with ``t``.
        dx: time derivatives (N, n) (derivative matching).
        t: sampling times (T,), evenly spaced (trajectory matching).
        config: :class:`FitConfig`. progress: a progress bar (None: only on a terminal).
        callback: ``callback(evaluations, loss)`` after every chunk of evaluations.

    Returns:
        A :class:`FitResult`; the model holds the trained parameters.
    """
    config = config or FitConfig()
    config.validate()
    x, dx, t = _check_data(model, x, dx, t)
    if t is None and config.free_starts:
        raise ValueError("fit: FitConfig.free_starts is for trajectory data; pass the trajectories with t=")
    if t is not None and (config.lm_iter or config.energy_penalty):
        raise ValueError("fit: FitConfig.lm_iter and energy_penalty need derivative data (dx); "
                         "estimate derivatives first (sp_dynamics.estimate_derivatives) or set them to 0")
    if config.starts == 1:
        return _fit_once(model, x, dx, t, config, progress, callback)
    start = time.time()
    kept, kept_state, finals = None, None, []
    for s in range(config.starts):
        candidate = copy.deepcopy(model)
        seed = config.seed + 10007 * s
        if s > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                reinitialize(candidate)  # parameters only: a standardisation already set stays
        result = _fit_once(candidate, x, dx, t, replace(config, seed=seed), progress, callback)
        final = result.data_loss if math.isfinite(result.data_loss) else math.inf
        finals.append(final)
        if kept is None or final < min(finals[:-1]):
            kept, kept_state = result, candidate.state_dict()
            kept.chosen_start = s
        if final <= config.start_good_loss:
            break
    model.load_state_dict(kept_state)
    kept.start_losses, kept.seconds, kept.config = finals, time.time() - start, config
    return kept


def _fit_once(model: nn.Module, x: Tensor, dx: Tensor | None, t: Tensor | None, config: FitConfig,
              progress: bool | None, callback: Callable[[int, float], None] | None) -> FitResult:
    """One whole fit (restarts, main L-BFGS run, Levenberg-Marquardt phase) on checked data."""
    if config.standardize:
        standardize_inputs(model, x)
    rates = dx if t is None else (x[:, 1:] - x[:, :-1])
    positions = x if t is None else x[:, :-1]
    orient_entropy(model, positions, rates)
    lam = config.entropy_penalty if _has_entropy(model) else 0.0
    lam_energy = config.energy_penalty if _has_entropy(model) else 0.0
    if t is None:
        w = _weights(dx, config.weighting)

        def data_loss_of(m):
            return derivative_loss(m, x, dx, w)

        def loss_of(m):
            if (lam or lam_energy) and hasattr(m, "gradients"):
                return _generic_derivative_loss(m, x, dx, w, lam, lam_energy)
            return data_loss_of(m)
    else:
        w = _weights(x[:, 1:] - x[:, :-1], config.weighting)
        if config.free_starts:  # the window starts become parameters next to the model's
            model = _FreeStarts(model, x[:, shooting_starts(x.shape[1], config.horizon)])

            def data_loss_of(m):
                return shooting_loss(m.model, t, x, m.starts, method=config.method, horizon=config.horizon,
                                     substeps=config.substeps, weights=w)
        else:
            def data_loss_of(m):
                return trajectory_loss(m, t, x, method=config.method, horizon=config.horizon,
                                       substeps=config.substeps, weights=w)

        def loss_of(m):
            loss = data_loss_of(m)
            if lam:
                S = _field(m).entropy(x)
                loss = loss + lam * entropy_orientation(S[:, 1:] - S[:, :-1])
            return loss

    start = time.time()
    restart_losses: list[float] = []
    chosen = 0
    if config.restarts > 1:
        best_state, best = None, math.inf
        with torch.random.fork_rng(devices=[]):
            for r in range(config.restarts):
                candidate = copy.deepcopy(model)  # restart 0: the initialisation given
                if r > 0:
                    torch.manual_seed(config.seed * 1000 + r)
                    reinitialize(candidate)  # parameters only: the standardisation buffers stay
                    orient_entropy(_field(candidate), positions, rates)
                loss = _lbfgs(candidate, loss_of, config.restart_iter, config)
                restart_losses.append(loss)
                if loss < best or best_state is None:
                    best, chosen, best_state = loss, r, candidate.state_dict()
        model.load_state_dict(best_state)
    losses: list[float] = []
    stopped = _run(model, loss_of, config, losses, progress, callback)
    if config.polish_iter and (lam or lam_energy) and not stopped.startswith("non-finite"):
        polish: list[float] = []
        offset = len(losses)
        stopped = _run(model, data_loss_of, replace(config, max_iter=config.polish_iter), polish, progress,
                       None if callback is None else lambda n, value: callback(offset + n, value))
        losses += polish
    evaluations = len(losses)
    if config.lm_iter and not stopped.startswith("non-finite"):
        stopped = levenberg_marquardt(model, x, dx, w, config.lm_iter, losses, progress, callback,
                                      points=config.lm_points or None, seed=config.seed)
    with torch.enable_grad():  # the data term at the final parameters: what starts are chosen by
        data_loss = float(data_loss_of(model).detach())
    return FitResult(losses, restart_losses, chosen, evaluations, time.time() - start, stopped, config,
                     lm_iterations=len(losses) - evaluations, data_loss=data_loss)


class _FreeStarts(nn.Module):
    """A model and the free initial states of its shooting windows (``FitConfig.free_starts``),
    trained together; re-initialising puts the starts back at the observed states."""

    def __init__(self, model: nn.Module, observed: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("observed", observed.detach().clone())
        self.starts = nn.Parameter(observed.detach().clone())

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.starts.copy_(self.observed)


def _field(m: nn.Module) -> nn.Module:
    """The vector-field model inside what the optimiser trains."""
    return m.model if isinstance(m, _FreeStarts) else m


def _lbfgs(model: nn.Module, loss_of, max_eval: int, config: FitConfig) -> float:
    """``max_eval`` L-BFGS evaluations on ``model``; returns its loss afterwards (inf if the
    loss became non-finite)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_lbfgs(params, max_eval, config.history)
    try:
        opt.step(lbfgs_closure(opt, params, lambda: loss_of(model)))
        value = float(loss_of(model).detach())  # needs grad mode: the loss differentiates E, S
    except FloatingPointError:
        return math.inf
    return value if math.isfinite(value) else math.inf


def _run(model, loss_of, config: FitConfig, losses: list[float], progress, callback) -> str:
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_lbfgs(params, config.chunk, config.history)
    best_state, best = copy.deepcopy(model.state_dict()), math.inf
    closure = lbfgs_closure(opt, params, lambda: loss_of(model), losses.append)

    stopped = "max_iter"
    with tqdm(total=config.max_iter, desc="fit", unit="eval", disable=None if progress is None else not progress) as bar:
        while len(losses) < config.max_iter:
            before = len(losses)
            for group in opt.param_groups:  # never past max_iter evaluations in all
                group["max_iter"] = group["max_eval"] = min(config.chunk, config.max_iter - before)
            try:
                opt.step(closure)
            except FloatingPointError:  # the parameters are where the loss blew up: restore
                model.load_state_dict(best_state)
                return "non-finite loss (kept the best parameters seen)"
            if len(losses) == before:  # L-BFGS made no evaluation: converged to round-off
                stopped = "converged"
                break
            current = losses[-1]
            bar.update(len(losses) - before)
            bar.set_postfix(loss=f"{current:.3e}")
            if not math.isfinite(current):
                stopped = "non-finite loss (kept the best parameters seen)"
                break
            if current < best:
                best, best_state = current, copy.deepcopy(model.state_dict())
            if callback is not None:
                callback(len(losses), current)
            if current <= config.tol:
                stopped = "tol"
                break
            w = config.plateau_window
            if len(losses) > w and min(losses[-w:]) > (1 - config.plateau_rtol) * min(losses[:-w]):
                stopped = "plateau"
                break
    if losses and not (losses[-1] <= best):
        model.load_state_dict(best_state)
    return stopped


# ---------------------------------------------------------------------------------------------
# Levenberg-Marquardt on the derivative residuals
# ---------------------------------------------------------------------------------------------


def _per_sample_jacobian(model: nn.Module, params: dict, frozen: dict, buffers: dict, x: Tensor,
                         chunk: int = 128) -> Tensor:
    """d f(x_k) / d theta for every state: (N * n, P) with theta the tensors of ``params`` in
    order (``frozen`` parameters are held fixed); rows in the order of ``f(x).reshape(-1)``."""
    from torch.func import functional_call, jacrev, vmap

    def one(p, xk):
        return functional_call(model, ({**p, **frozen}, buffers), (0.0, xk.unsqueeze(0))).squeeze(0)

    try:
        jac = vmap(jacrev(one), in_dims=(None, 0), chunk_size=chunk)(params, x)
    except RuntimeError as exc:  # a model torch.func cannot transform (in-place writes, .item(), ...)
        raise ValueError(f"fit: the Levenberg-Marquardt phase needs a model that torch.func can "
                         f"differentiate per sample ({str(exc).splitlines()[0]}); use FitConfig(lm_iter=0)") from None
    return torch.cat([j.reshape(x.shape[0] * x.shape[1], -1) for j in jac.values()], 1)


def levenberg_marquardt(model: nn.Module, x: Tensor, dx: Tensor, weights: Tensor, iterations: int,
                        losses: list[float] | None = None, progress: bool | None = None,
                        callback: Callable[[int, float], None] | None = None, points: int | None = None,
                        seed: int = 0) -> str:
    """Minimise :func:`derivative_loss` (``sum_i w_i mean (f(x)_i - dx_i)^2``) over the model's
    trainable parameters by Levenberg-Marquardt, in place: each iteration forms the exact
    Jacobian J of the weighted residuals (per-sample, by ``torch.func``), solves
    ``(J J^T + mu I) y = r`` (or the P x P system when there are fewer parameters than
    residuals) by Cholesky and steps ``theta -= J^T y``, accepting only steps that lower the loss
    (mu shrinks 3x after a success and grows 4x after a failure, up to 10 tries). With
    ``points`` below the number of states, each iteration's Jacobian uses a fresh random subset of
    that many states (``seed``) and the step is accepted on all of them. ``losses`` receives the
    loss after every iteration. Returns why it stopped."""
    from tqdm import tqdm

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    scale = (weights / x.shape[0]).sqrt()                     # residual r = scale * (f - dx)

    def residual(params: dict) -> Tensor:
        from torch.func import functional_call

        with torch.enable_grad():  # the model differentiates E and S with respect to x
            f = functional_call(model, ({**params, **frozen}, buffers), (0.0, x))
        return ((f.detach() - dx) * scale).reshape(-1)

    def unflatten(theta: Tensor) -> dict:
        out, i = {}, 0
        for n, p in named:
            out[n] = theta[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    params = {n: p.detach().clone() for n, p in named}
    r = residual(params)
    loss = float(r.pow(2).sum())
    mu, stopped = 1e-3, "lm_iter"
    generator = torch.Generator().manual_seed(seed)
    losses = [] if losses is None else losses
    with tqdm(total=iterations, desc="levenberg-marquardt", unit="it",
              disable=None if progress is None else not progress) as bar:
        for it in range(iterations):
            rows = torch.arange(x.shape[0])
            if points is not None and points < x.shape[0]:
                rows = torch.randperm(x.shape[0], generator=generator)[:points].sort().values
            J = _per_sample_jacobian(model, params, frozen, buffers, x[rows]) * scale.repeat(len(rows)).unsqueeze(-1)
            r_rows = r.view(x.shape[0], -1)[rows].reshape(-1)
            small = J.shape[0] <= J.shape[1]
            gram = J @ J.T if small else J.T @ J
            rhs = r_rows if small else J.T @ r_rows
            level = float(gram.diagonal().mean())
            theta = torch.cat([params[n].reshape(-1) for n in names])
            for _ in range(10):
                chol, info = torch.linalg.cholesky_ex(gram + mu * level * torch.eye(len(gram), dtype=gram.dtype))
                if int(info) == 0:
                    y = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
                    trial = unflatten(theta - (J.T @ y if small else y))
                    r_trial = residual(trial)
                    loss_trial = float(r_trial.pow(2).sum())
                    if math.isfinite(loss_trial) and loss_trial < loss:
                        params, r, loss, mu = trial, r_trial, loss_trial, max(mu / 3, 1e-15)
                        break
                mu *= 4
            else:
                stopped = "levenberg-marquardt: no step lowered the loss"
                break
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3e}")
            if callback is not None:
                callback(len(losses), loss)
    with torch.no_grad():
        for n, p in named:
            p.copy_(params[n])
    return stopped
