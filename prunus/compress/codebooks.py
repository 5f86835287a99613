"""Fine-tune the shared codebook values of quantized layers by distillation (Deep Compression style).

After quantization every surviving weight of a coded layer is `codebook[index]`. Training the
codebook keeps that tie: the gradient of a codebook entry is the sum of the gradients of the
weights that share it (`index_add_`), and the weights are rewritten from the codebook after each
step, so the indices, the mask and hence the ANS stream's symbols stay what they were while the
values move to where the teacher's soft targets want them. Biases and BatchNorm train freely (the
file stores them as float16 anyway). Codebooks are rounded to float16 at the end and re-sorted
(indices remapped), so the returned coding is again exactly what the .prn file decodes to.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunus.compress.pack import apply_quantized
    >>> from prunus.compress.quantize import choose
    >>> torch.manual_seed(0) and None
    >>> teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    >>> student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> _ = student.load_state_dict(teacher.state_dict())
    >>> mask = torch.rand(16, 8) > 0.5
    >>> coded = {"0.weight": apply_quantized(student[0].weight, mask, choose(student[0].weight[mask], 2))}
    >>> out = finetune_codebooks(student, teacher, torch.randn(64, 8), coded, steps=5, lr=1e-2, temperature=4.0, seed=0)
    >>> c, w = out["0.weight"], student[0].weight
    >>> torch.equal(w[mask], c.quantizer.codebook[c.indices]), bool((w[~mask] == 0).all())
    (True, True)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from prunus.compress.kd import kd_losses
from prunus.compress.pack import CodedLayer

__all__ = ["finetune_codebooks"]


def _write(weight: torch.Tensor, c: CodedLayer, book: torch.Tensor) -> None:
    new = torch.zeros_like(weight)
    new[c.mask] = book[c.indices].to(weight.dtype)
    weight.copy_(new)


def finetune_codebooks(
    student: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    coded: dict[str, CodedLayer],
    *,
    steps: int,
    lr: float,
    temperature: float,
    seed: int,
    batch: int = 128,
    teacher_logits: torch.Tensor | None = None,
) -> dict[str, CodedLayer]:
    """KD (Adam, soft targets at `temperature`) of the codebooks of `coded` and the uncoded parameters.

    Args:
        student: holds the quantized weights (`pack.apply_quantized`); modified in place.
        teacher: gives the soft targets on `x` (calibration images of the training split).
        coded: state-dict name of a weight -> its coding; the masks and indices are kept.
        teacher_logits: the teacher's logits on `x`, when already computed.

    Returns:
        The codings with the trained, float16-rounded, sorted codebooks (indices remapped);
        `student` holds exactly the weights they decode to.
    """
    params = dict(student.named_parameters())
    books = {name: nn.Parameter(c.quantizer.codebook.detach().clone().float()) for name, c in coded.items()}
    others = [p for name, p in params.items() if name not in coded and p.requires_grad]
    opt = torch.optim.Adam([*books.values(), *others], lr=lr)
    losses = kd_losses(student, teacher, x, steps=steps, temperature=temperature, seed=seed, batch=batch,
                       teacher_logits=teacher_logits)  # fmt: skip
    for loss in losses:
        opt.zero_grad(set_to_none=True)
        for name in coded:
            params[name].grad = None
        loss.backward()
        for name, c in coded.items():
            grad = params[name].grad
            g = torch.zeros_like(books[name])
            if grad is not None:
                g.index_add_(0, c.indices, grad[c.mask].float())
            books[name].grad = g
        opt.step()
        with torch.no_grad():
            for name, c in coded.items():
                _write(params[name], c, books[name])
    student.eval()  # also when steps == 0
    out = {}
    with torch.no_grad():
        for name, c in coded.items():
            values = books[name].detach().to(torch.float16).to(torch.float32)
            order = torch.argsort(values, stable=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel())
            new = CodedLayer(c.mask, dataclasses.replace(c.quantizer, codebook=values[order]), rank[c.indices])
            _write(params[name], new, new.quantizer.codebook)
            params[name].grad = None
            out[name] = new
    return out
