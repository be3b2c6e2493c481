"""Few-shot adaptation by latent auto-decoding: the base is frozen, only latents are fitted.

Shapes: shots x, dx (K, N, n) for K tasks; latents (K, k).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["support_loss", "adapt_latent", "adapt_latent_gauss_newton", "adapt_latent_lstsq",
           "field_is_linear_in_latent"]


def support_loss(model: nn.Module, x: Tensor, dx: Tensor, z: Tensor, entropy_penalty: float = 0.0) -> Tensor:
    """Per-task derivative-matching loss ``mean ||f(x; z) - dx||^2``, shape (K,).

    For Hamiltonian models this is the paper's ``|dq - dH/dp|^2 + |dp + dH/dq|^2``; for GENERIC
    models ``|dx - (L grad E + M grad S)|^2``. ``entropy_penalty`` (GENERIC latent models only)
    adds that weight times :func:`sp_dynamics.fitting.entropy_orientation` of each task's entropy
    rates along its data, scaled by the task's ``mean |dx|^2``: zero for every model that fits the
    data, it keeps entropies from decreasing along them (see ``fit``)."""
    if not (entropy_penalty and hasattr(model, "entropy_net")):
        return (model(0.0, x, z) - dx).pow(2).sum(-1).mean(-1)
    dE, dS = model.gradients(x, z)
    err = (model.field_from_gradients(x, dE, dS) - dx).pow(2).sum(-1).mean(-1)
    rates = (dS * dx).sum(-1)                                               # (K, N)
    orientation = torch.relu(-rates).pow(2).mean(-1) / (rates.pow(2).mean(-1) + torch.finfo(rates.dtype).tiny)
    return err + entropy_penalty * dx.pow(2).sum(-1).mean(-1).detach() * orientation


def _check_support(model: nn.Module, x: Tensor, dx: Tensor, z_init: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validated support sets and start latent, in the model's dtype."""
    if x.ndim != 3 or x.shape != dx.shape:
        raise ValueError(f"support sets must be (K, N, n) with matching x and dx, got {tuple(x.shape)}, {tuple(dx.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(dx).all()):
        raise ValueError("support sets contain NaN or inf")
    k = getattr(model, "latent_dim", None)
    if z_init.shape[-1:] != (k,) or z_init.ndim not in (1, 2) or (z_init.ndim == 2 and z_init.shape[0] != x.shape[0]):
        raise ValueError(f"z_init must be (k,) or (K, k) with k = {k} and K = {x.shape[0]}, got {tuple(z_init.shape)}")
    if not torch.isfinite(z_init).all():
        raise ValueError("z_init contains NaN or inf")
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    return x.to(dtype), dx.to(dtype), z_init.to(dtype)


def adapt_latent(model: nn.Module, x: Tensor, dx: Tensor, *, z_init: Tensor, steps: int = 500, lr: float = 1e-2,
                 lam_z: float = 0.0, entropy_penalty: float = 0.0) -> tuple[Tensor, list[float]]:
    """Fit latents to K-shot support sets with the base frozen (all tasks at once).

    Args:
        model: a latent model (``model(t, x, z)``), e.g. :class:`~sp_dynamics.LatentHamiltonianNN`.
        x, dx: support states and derivatives (K, N, n).
        z_init: (K, k) or (k,) start latents (the paper: the mean of the training latents).
        steps, lr: Adam on the latents only. lam_z: weight of ``||z||_2`` (locality).
        entropy_penalty: see :func:`support_loss`.

    Returns:
        The adapted latents (K, k) (detached) and the mean support loss per step; use
        ``model.condition(z[i])`` for the adapted vector field of task i.
    """
    x, dx, z_init = _check_support(model, x, dx, z_init)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    z = z_init.detach().clone().expand(x.shape[0], -1).clone() if z_init.ndim == 1 else z_init.detach().clone()
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    history = []
    try:
        for _ in range(steps):
            loss = support_loss(model, x, dx, z, entropy_penalty).sum()  # tasks are independent: sum, not mean
            if lam_z:
                loss = loss + lam_z * z.norm(dim=-1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()) / x.shape[0])
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return z.detach(), history


def adapt_latent_gauss_newton(model: nn.Module, x: Tensor, dx: Tensor, *, z_init: Tensor, steps: int = 3,
                              ridge: float = 1e-8, fd_step: float = 1e-5) -> tuple[Tensor, list[float]]:
    """Latent auto-decoding by Gauss-Newton: each step is one least-squares solve, no inner loop.

    The field is linearised in the latent, ``f(x; z + d) ~ f(x; z) + J(x) d``, with the Jacobian
    ``J`` (N n x k per task) from central differences in z (k is small: 2k field evaluations),
    and ``d`` solves ``min ||J d - (dx - f(x; z))||^2 + ridge ||d||^2``. A model whose field is
    linear in z is adapted exactly by one step; for the modulated MLPs a few steps replace
    hundreds of Adam steps. A step that does not lower a task's loss is halved (up to 10 times).
    Runs in float64 whatever the model's dtype (central differences need it).

    Args, shapes and returns as :func:`adapt_latent` (``history``: mean loss before each step
    and after the last).
    """
    x, dx, z_init = _check_support(model, x, dx, z_init)
    if steps < 0 or ridge < 0 or not fd_step > 0:
        raise ValueError(f"need steps >= 0, ridge >= 0 and fd_step > 0, got {steps}, {ridge}, {fd_step}")
    import copy

    model = copy.deepcopy(model).double()
    x, dx = x.double(), dx.double()
    K, k = x.shape[0], model.latent_dim
    z = (z_init.expand(K, -1) if z_init.ndim == 1 else z_init).detach().double().clone()

    def field(zz: Tensor) -> Tensor:
        return model(0.0, x, zz).detach().reshape(K, -1)                      # (K, N n)

    def losses(zz: Tensor) -> Tensor:
        return (field(zz) - dx.reshape(K, -1)).pow(2).reshape(x.shape).sum(-1).mean(-1)

    current = losses(z)
    history = [float(current.mean())]
    eye = torch.eye(k, dtype=torch.float64)
    for _ in range(steps):
        f0 = field(z)
        columns = []
        for j in range(k):
            e = torch.zeros_like(z)
            e[:, j] = fd_step
            columns.append((field(z + e) - field(z - e)) / (2 * fd_step))
        J = torch.stack(columns, -1)                                           # (K, N n, k)
        r = dx.reshape(K, -1) - f0
        d = torch.linalg.solve(J.transpose(1, 2) @ J + ridge * eye, (J.transpose(1, 2) @ r.unsqueeze(-1))).squeeze(-1)
        scale = torch.ones(K, 1, dtype=torch.float64)
        for _ in range(10):                                                    # per-task step halving
            trial = losses(z + scale * d)
            worse = ~(trial <= current)
            if not worse.any():
                break
            scale[worse] *= 0.5
        accept = trial <= current
        z = torch.where(accept.unsqueeze(-1), z + scale * d, z)
        current = torch.where(accept, trial, current)
        history.append(float(current.mean()))
    return z.detach(), history


def field_is_linear_in_latent(model: nn.Module) -> bool:
    """Whether a latent model's field is an affine function of z, so that
    :func:`adapt_latent_lstsq` is exact: a :class:`~sp_dynamics.LatentHamiltonianNN` whose energy
    network is modulated by ``kind="head"`` (``J grad H`` is linear in H, and H is affine in z).
    GENERIC latent models are not: their bracket's dissipation depends on grad E and grad S."""
    from ..models import LatentHamiltonianNN

    return isinstance(model, LatentHamiltonianNN) and model.energy_net.linear_in_latent


def adapt_latent_lstsq(model: nn.Module, x: Tensor, dx: Tensor, *, ridge: float = 1e-8) -> Tensor:
    """Exact latent adaptation of a model whose field is affine in z: one least-squares solve.

    With ``f(x; z) = f(x; 0) + G(x) z``, the columns of G are ``f(x; e_j) - f(x; 0)`` (exact,
    k + 1 field evaluations, no finite-difference step), and z solves
    ``min ||G z - (dx - f(x; 0))||^2 + ridge ||z||^2`` per task. No start latent, no inner loop,
    no step size. Runs in float64.

    Args: ``model`` with :func:`field_is_linear_in_latent` true (anything else is refused: the
    solve would be one Gauss-Newton step, not the answer); x, dx (K, N, n) support sets.
    Returns the latents (K, k).
    """
    if not field_is_linear_in_latent(model):
        raise ValueError(f"adapt_latent_lstsq needs a field that is linear in the latent "
                         f"(LatentHamiltonianNN with kind='head'); got {type(model).__name__}"
                         + (f" with kind={model.energy_net.kind!r}" if hasattr(model, "energy_net") else "")
                         + "; use adapt_latent_gauss_newton")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    import copy

    k = model.latent_dim
    x, dx, _ = _check_support(model, x, dx, torch.zeros(k))
    model = copy.deepcopy(model).double()
    x, dx = x.double(), dx.double()
    K = x.shape[0]
    basis = torch.cat([torch.zeros(1, k), torch.eye(k)]).double()              # z = 0, e_1, ..., e_k
    fields = torch.stack([model(0.0, x, b.expand(K, k)).detach().reshape(K, -1) for b in basis], -1)
    f0, G = fields[..., 0], fields[..., 1:] - fields[..., :1]                  # (K, N n), (K, N n, k)
    rhs = G.transpose(1, 2) @ (dx.reshape(K, -1) - f0).unsqueeze(-1)
    eye = torch.eye(k, dtype=torch.float64)
    return torch.linalg.solve(G.transpose(1, 2) @ G + ridge * eye, rhs).squeeze(-1)
