"""The diagonal Fisher information of a classifier's output, per weight: how much KL a weight change costs.

For a small change d of the weights, KL(p_w || p_{w+d}) is about 1/2 * sum_i F_ii * d_i^2 (mean over
images), where F is the Fisher information of the model's own predictive distribution. The Fisher
bit allocation (`prunus.compress.bits`, `order="fisher"`) uses it to predict the KL a quantizer adds
to a layer without running the model once per candidate.

Estimator: per chunk of images, a label is drawn from the model's own softmax (the true Fisher, not
the "empirical" one on given labels) and the log-likelihoods are summed with random signs; the
squared gradient of that signed sum is an unbiased estimate of the sum of the per-image squared
gradients (the cross terms have mean zero), so one backward pass per chunk stands in for one per
image. Seeded: the same model and images give the same Fisher.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    >>> f = fisher_diagonal(net, ["0", "2"], torch.randn(64, 8))
    >>> f["0"].shape == net[0].weight.shape and bool((f["2"] >= 0).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunus.compress.runner import prunable_layers

__all__ = ["fisher_diagonal"]


def fisher_diagonal(
    model: nn.Module, names: Sequence[str], x: torch.Tensor, *, chunk: int = 128, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher (mean over the images of `x`) of the weight of each layer in `names`.

    The model is run as it is (call `.eval()` first for inference statistics); its weights and
    `requires_grad` flags are left as they were.
    """
    layers = prunable_layers(model)
    weights = [layers[n].weight for n in names]
    flags = [w.requires_grad for w in weights]
    total = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in zip(names, weights)}
    gen = torch.Generator().manual_seed(seed)
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            for part in x.split(max(1, chunk)):
                logp = F.log_softmax(model(part).float(), -1)
                drawn = torch.multinomial(logp.detach().exp(), 1, generator=gen)
                signs = torch.randint(0, 2, (part.shape[0],), generator=gen).float() * 2 - 1
                grads = torch.autograd.grad((signs * logp.gather(1, drawn).squeeze(1)).sum(), weights,
                                            allow_unused=True)  # fmt: skip
                for n, g in zip(names, grads):
                    if g is not None:  # a layer the output does not reach has no Fisher
                        total[n] += g.detach().float() ** 2
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    return {n: t / max(1, x.shape[0]) for n, t in total.items()}
