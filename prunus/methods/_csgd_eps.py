"""C-SGD's convergence arithmetic: how far apart cluster members are predicted to end, and eps="auto".

Pure functions of the run's per-step learning rates, momentum and weight decay; no model, no data.

With SGD + momentum m the centripetal rule shrinks the difference of two members by
lr (wd + eps) / (1 - m) per step (heavy ball), saturating near -ln(m) / 2 once underdamped; with
AdamW (`pull=True`) the pull W <- W - a (W - mean), a = min(1, lr * eps), is applied after each step.

Example:
    >>> import math
    >>> eps = auto_eps([0.05] * 400, 0.9, 5e-4, 1e-6)
    >>> log_residual([eps] * 400, [0.05] * 400, 0.9, 5e-4) <= math.log(1e-6)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["auto_eps", "log_residual"]


def log_residual(eps_per_step: Sequence[float], lrs: Sequence[float], momentum: float, wd: float, *,
                 pull: bool = False) -> float:  # fmt: skip
    """ln of the predicted member difference at the end of the run relative to the start."""
    if pull:  # W <- W - a (W - mean) with a = min(1, lr * eps)
        total = 0.0
        for lr, eps in zip(lrs, eps_per_step, strict=True):
            a = min(1.0, lr * eps)
            if a >= 1.0:
                return -math.inf
            total += math.log1p(-a)
        return total
    # heavy-ball rate lr (wd + eps) / (1 - m) per step, saturating near -ln(m) / 2 (underdamped)
    cap = -0.5 * math.log(momentum) if momentum > 0 else math.inf
    return -sum(min(lr * (wd + eps) / (1 - momentum), cap) for lr, eps in zip(lrs, eps_per_step, strict=True))


def auto_eps(lrs: Sequence[float], momentum: float, wd: float, tol: float, *, pull: bool = False) -> float:
    """The smallest eps whose predicted residual is below `tol`, or the largest safe eps when none is.

    The search stops at half heavy-ball's stability limit lr (wd + eps) < 2 (1 + m) at the largest lr
    (pull form: at a = lr * eps = 1, an exact collapse, at the largest lr).
    """
    target = math.log(tol)
    peak = max(lrs, default=0.0) or 1.0
    hi = max(0.5 * (1 + momentum) / peak - wd, 0.0) if not pull else 1.0 / peak
    lo = 0.0
    if log_residual([hi] * len(lrs), lrs, momentum, wd, pull=pull) <= target:
        for _ in range(50):  # bisection: the residual falls monotonically with eps
            mid = (lo + hi) / 2
            below = log_residual([mid] * len(lrs), lrs, momentum, wd, pull=pull) <= target
            lo, hi = (lo, mid) if below else (mid, hi)
    return hi
