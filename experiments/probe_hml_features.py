"""Linear probe on the final state of one untrained HML layer, permuted pixel MNIST.

    python -m experiments.probe_hml_features

Why the pixel-MNIST HML has one wide layer read at the last step (experiments/PROTOCOL.md,
"Pixel MNIST"): the final state (q_T, p_T) of one layer with unit input force is a damped,
Fourier-like linear summary of the whole pixel sequence. A multinomial logistic regression on
it (standardised features, L-BFGS, weight decay 1e-3) measures how much of the class it holds
before any training. Prints one line per layer configuration; trains nothing but the probe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metriplector.images import mnist_parts
from metriplector.pixel_mnist import pixel_sequences
from sp_dynamics.sequence import HamiltonianMemoryLayer

CONFIGS = [(128, "linear", -4.0), (128, "linear", -6.0), (256, "linear", -6.0), (128, "random", -4.0)]


def final_states(layer: HamiltonianMemoryLayer, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        out = []
        for i in range(0, len(x), batch):
            q, p = layer.states(x[i : i + batch])
            out.append(torch.cat([q[:, -1], p[:, -1]], -1))
    return torch.cat(out)


def probe(D: int, frequencies: str, raw_gamma: float, parts: dict, order: str = "permuted") -> float:
    torch.manual_seed(0)
    layer = HamiltonianMemoryLayer(1, D, 1, mode="chunked", frequencies=frequencies, damping=True,
                                   stiffness_range=(1e-4, 3.0))
    with torch.no_grad():
        layer.raw_gamma.fill_(raw_gamma)  # damping softplus(raw_gamma)
        layer.force.weight.fill_(1.0)
        layer.force.bias.zero_()
    (xtr, ytr), (xte, yte) = ((pixel_sequences(parts[p][0], order), torch.from_numpy(parts[p][1])) for p in ("train", "test"))
    ftr, fte = final_states(layer, xtr), final_states(layer, xte)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    W = torch.zeros(2 * D, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(ftr @ W + b, ytr) + 1e-3 * W.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((fte @ W + b).argmax(-1) == yte).float().mean())


def main() -> None:
    parts = mnist_parts()
    for D, frequencies, raw_gamma in CONFIGS:
        acc = probe(D, frequencies, raw_gamma, parts)
        print(f"D = {D}, frequencies {frequencies}, raw damping {raw_gamma}: permuted test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
