"""Latent modulation of MLPs: FW, Shift, RO / MR(r), SVD(r) and head, driven by a hypernetwork.

Reference: Jing et al., "Meta-learning structure-preserving dynamics" (arXiv 2508.11205),
summarised in ``experiments/PROTOCOL.md``. For hidden layer l with activation sigma:

=========  ===========================================================  =====================
kind       layer map                                                    per-layer hyper output
=========  ===========================================================  =====================
``fw``     sigma((W + dW(z)) h + b + db(z))   (CoDA: linear hyper, no bias)   dW, db
``shift``  sigma(W h + b + s(z))                                        s
``mr``     sigma((W + U(z) V(z)^T) h + b + s(z)),  rank r  (RO = MR(1))  U, V, s
``svd``    sigma((W + sum_i d_i(z) u_i v_i^T) h + b + s(z)), u_i, v_i    d = ReLU(.), s
           shared base parameters, soft orthogonality penalty
``head``   hidden layers unmodulated; output (w + A z) . h + c + a . z  (linear hyper, no bias)
=========  ===========================================================  =====================

FW, Shift, MR and SVD modulate the hidden layers only (shifting an energy network's final
scalar bias would not change grad H). ``head`` is not one of the paper's methods: it modulates
only the output layer, through a linear hypernetwork, so the network's output, and with it the
field of a Hamiltonian model, is *linear* in z. Adapting such a latent is a linear
least-squares problem with one solve (:func:`~sp_dynamics.meta.adaptation.adapt_latent_lstsq`);
the price is that a family must be spanned by the learned features.

Hypernetwork heads start at zero (as in peft), so at initialisation the modulated network equals
the base network for every latent; :meth:`ModulatedMLP.merge` folds a latent's modulation into
plain weights.

Dimension letters: ``K`` tasks, ``N`` points per task, ``k`` latent size, ``r`` rank.
Inputs are (K, N, in) with latents (K, k), or (..., in) with a single latent (k,).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .nn import activation
from .serialization import serializable

__all__ = ["MODULATIONS", "ModulatedMLP", "orthogonality_penalty", "model_orthogonality"]

MODULATIONS = ("none", "fw", "shift", "ro", "mr", "svd", "head")
LINEAR_IN_LATENT = ("none", "head")  # kinds whose output is affine in z (see ModulatedMLP.linear_in_latent)
SVD_D_INIT = 1e-3  # initial singular values of the SVD modulation (see ModulatedMLP.__init__)


class _Heads(nn.Module):
    """z -> named per-layer modulation tensors. Linear without bias for FW (CoDA), else an MLP
    z -> hidden -> heads. Final weights start at zero: zero modulation for every z at init."""

    def __init__(self, latent_dim: int, sizes: dict[str, int], linear: bool, hidden: int):
        super().__init__()
        self.sizes = sizes
        total = sum(sizes.values())
        if linear:
            self.body = nn.Identity()
            self.out = nn.Linear(latent_dim, total, bias=False)
        else:
            self.body = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU())
            self.out = nn.Linear(hidden, total)
            nn.init.zeros_(self.out.bias)
        nn.init.zeros_(self.out.weight)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        flat = self.out(self.body(z))
        return dict(zip(self.sizes, flat.split(list(self.sizes.values()), -1)))


@serializable
class ModulatedMLP(nn.Module):
    """MLP whose hidden layers are modulated by a latent code through a hypernetwork.

    Args:
        in_dim, out_dim, hidden, depth, act: the base MLP (``depth`` hidden layers).
        kind: one of :data:`MODULATIONS` (``"ro"`` is ``"mr"`` with rank 1; ``"none"`` ignores z).
        rank: r for ``mr`` and ``svd``. latent_dim: k. hyper_hidden: width of the hypernetwork.

    Example::

        net = ModulatedMLP(2, 1, kind="svd", rank=5, latent_dim=8)
        y = net(torch.randn(10, 256, 2), torch.randn(10, 8))   # (10, 256, 1): 10 tasks
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, depth: int = 3, act: str = "tanh",
                 kind: str = "svd", rank: int = 5, latent_dim: int = 8, hyper_hidden: int = 64):
        super().__init__()
        if kind not in MODULATIONS:
            raise ValueError(f"unknown modulation {kind!r}; available: {MODULATIONS}")
        if kind == "ro":
            kind, rank = "mr", 1
        if kind in ("mr", "svd") and rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.kind, self.rank, self.latent_dim = kind, rank, latent_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        widths = [in_dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(hidden, out_dim)
        self.act = activation(act)
        sizes: dict[str, int] = {}
        for l, lin in enumerate(self.layers):
            o, i = lin.out_features, lin.in_features
            if kind == "fw":
                sizes[f"dW{l}"], sizes[f"db{l}"] = o * i, o
            elif kind == "shift":
                sizes[f"s{l}"] = o
            elif kind == "mr":
                sizes[f"U{l}"], sizes[f"V{l}"], sizes[f"s{l}"] = o * rank, i * rank, o
            elif kind == "svd":
                sizes[f"d{l}"], sizes[f"s{l}"] = rank, o
        if kind == "head":
            sizes["dH"], sizes["dc"] = out_dim * hidden, out_dim
        if kind == "svd":  # shared bases u_i, v_i (base parameters, near-orthonormal at init)
            self.u = nn.ParameterList(nn.Parameter(_orthonormal(l.out_features, rank)) for l in self.layers)
            self.v = nn.ParameterList(nn.Parameter(_orthonormal(l.in_features, rank)) for l in self.layers)
        self.hyper = _Heads(latent_dim, sizes, linear=kind in ("fw", "head"), hidden=hyper_hidden) if sizes else None
        if kind in ("svd", "mr"):
            # Heads that start at exactly zero must still get gradients. SVD: d = ReLU(head(z))
            # at 0 sits on ReLU's kink (gradient 0), so d would never move and SVD(r) would
            # train as Shift: a small positive bias keeps every d_i active. MR/RO: U(z) V(z)^T
            # with U = V = 0 is a saddle (each factor's gradient is proportional to the other):
            # V starts random and U at zero, so the modulation is still exactly zero at init.
            with torch.no_grad():
                offset = 0
                for name, size in sizes.items():
                    if name.startswith("d"):
                        self.hyper.out.bias[offset:offset + size] = SVD_D_INIT
                    elif name.startswith("V"):
                        fan_in = size // rank
                        self.hyper.out.bias[offset:offset + size].normal_(0.0, fan_in**-0.5)
                    offset += size

    @property
    def linear_in_latent(self) -> bool:
        """Whether the output is an affine function of z (``head``, or ``none``): then a field
        built from it by linear maps is adapted exactly by one least-squares solve."""
        return self.kind in LINEAR_IN_LATENT

    # -- parameter bookkeeping ---------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Numbers of base, hypernetwork and per-task (latent) parameters."""
        hyper = sum(p.numel() for p in self.hyper.parameters()) if self.hyper is not None else 0
        base = sum(p.numel() for p in self.parameters()) - hyper
        return {"base": base, "hypernetwork": hyper, "per_task": self.latent_dim if self.kind != "none" else 0}

    def modulations(self, z: Tensor) -> dict[str, Tensor]:
        """Per-layer modulation tensors for latents (K, k), each (K, ...)."""
        if self.hyper is None:
            return {}
        mods = self.hyper(z)
        for l, lin in enumerate(self.layers):
            o, i = lin.out_features, lin.in_features
            if self.kind == "fw":
                mods[f"dW{l}"] = mods[f"dW{l}"].reshape(*z.shape[:-1], o, i)
            elif self.kind == "mr":
                mods[f"U{l}"] = mods[f"U{l}"].reshape(*z.shape[:-1], o, self.rank)
                mods[f"V{l}"] = mods[f"V{l}"].reshape(*z.shape[:-1], i, self.rank)
            elif self.kind == "svd":
                mods[f"d{l}"] = torch.relu(mods[f"d{l}"])  # non-negative singular values
        if self.kind == "head":
            mods["dH"] = mods["dH"].reshape(*z.shape[:-1], self.out_dim, self.head.in_features)
        return mods

    def delta(self, l: int, mods: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """Weight and bias modulation of hidden layer l: (K, out, in) or None, (K, out) or None."""
        if self.kind == "fw":
            return mods[f"dW{l}"], mods[f"db{l}"]
        if self.kind == "shift":
            return None, mods[f"s{l}"]
        if self.kind == "mr":
            return mods[f"U{l}"] @ mods[f"V{l}"].transpose(-1, -2), mods[f"s{l}"]
        if self.kind == "svd":
            return (self.u[l] * mods[f"d{l}"].unsqueeze(-2)) @ self.v[l].T, mods[f"s{l}"]
        return None, None  # none, head

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """Batched over tasks: x (K, N, in) with z (K, k); or one task: x (..., in) with z (k,)."""
        if self.kind == "none":
            return self.forward_modulated(x, {})
        if z is None:
            raise ValueError("a modulated network needs a latent z")
        if z.shape[-1] != self.latent_dim or z.ndim not in (1, 2):
            raise ValueError(f"latent must have shape ({self.latent_dim},) or (K, {self.latent_dim}), got {tuple(z.shape)}")
        if z.ndim == 1:
            lead = x.shape[:-1]
            out = self.forward_modulated(x.reshape(1, -1, x.shape[-1]), self.modulations(z.unsqueeze(0)))
            return out.reshape(*lead, self.out_dim)
        if x.ndim != 3 or x.shape[0] != z.shape[0]:
            raise ValueError(f"with latents (K, k), x must be (K, N, {self.in_dim}); got x {tuple(x.shape)}, z {tuple(z.shape)}")
        return self.forward_modulated(x, self.modulations(z))

    def forward_modulated(self, x: Tensor, mods: dict[str, Tensor]) -> Tensor:
        """The network with explicit modulations (each with a leading task dim K), x (K, N, in)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected inputs (..., {self.in_dim}), got {tuple(x.shape)}")
        h = x
        for l, lin in enumerate(self.layers):
            pre = lin(h)
            dW, db = self.delta(l, mods) if mods else (None, None)
            if dW is not None:
                pre = pre + h @ dW.transpose(-1, -2)
            if db is not None:
                pre = pre + db.unsqueeze(-2)
            h = self.act(pre)
        out = self.head(h)
        if mods and self.kind == "head":
            out = out + h @ mods["dH"].transpose(-1, -2) + mods["dc"].unsqueeze(-2)
        return out

    def merge(self, z: Tensor) -> nn.Sequential:
        """A plain MLP with the modulation of one latent z (k,) folded into its weights."""
        if z.ndim != 1:
            raise ValueError(f"merge takes one latent of shape ({self.latent_dim},), got {tuple(z.shape)}")
        mods = {k: v[0] for k, v in self.modulations(z.unsqueeze(0)).items()} if self.kind != "none" else {}
        layers: list[nn.Module] = []
        with torch.no_grad():
            for l, lin in enumerate(self.layers):
                plain = nn.Linear(lin.in_features, lin.out_features).to(lin.weight)
                dW, db = self.delta(l, {k: v.unsqueeze(0) for k, v in mods.items()}) if mods else (None, None)
                plain.weight.copy_(lin.weight + (dW[0] if dW is not None else 0))
                plain.bias.copy_(lin.bias + (db[0] if db is not None else 0))
                layers += [plain, type(self.act)()]
            head = nn.Linear(self.head.in_features, self.head.out_features).to(self.head.weight)
            head.load_state_dict(self.head.state_dict())
            if self.kind == "head":
                head.weight += mods["dH"]
                head.bias += mods["dc"]
        return nn.Sequential(*layers, head)


def orthogonality_penalty(net: ModulatedMLP) -> Tensor:
    """SVD(r): sum over layers of ``||U^T U - I||_F + ||V^T V - I||_F`` (0 for other kinds)."""
    if net.kind != "svd":
        return torch.zeros(())
    eye = torch.eye(net.rank, dtype=net.u[0].dtype, device=net.u[0].device)
    return sum(
        torch.linalg.matrix_norm(U.T @ U - eye) + torch.linalg.matrix_norm(V.T @ V - eye) for U, V in zip(net.u, net.v)
    )


def model_orthogonality(model: nn.Module) -> Tensor:
    """The sum of :func:`orthogonality_penalty` over every SVD-modulated MLP inside ``model``."""
    terms = [orthogonality_penalty(m) for m in model.modules() if isinstance(m, ModulatedMLP) and m.kind == "svd"]
    return sum(terms) if terms else torch.zeros(())


def _orthonormal(n: int, r: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, max(r, 1)))
    return q[:, :r] if r <= n else torch.randn(n, r) / math.sqrt(n)
