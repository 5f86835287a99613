"""ForwardMask: the forward pass is the compact network's, masked channels get their would-be
gradient, every other parameter gets exactly the masked network's gradient (nothing leaks)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.models import create_model, list_models
from prunus.models.info import update_info
from prunus.structure import MASKED_ROLES, ForwardMask, build_groups, remove_, soft_mask_

from .conftest import NETS, X, pick, randomize_

X28 = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))


def _cases():
    for name in NETS:
        yield pytest.param(lambda n=name: (randomize_(NETS[n]()), X), id=name)
    for name in list_models():
        width = 0.5 if "lenet" in name else 0.25

        def make(n=name, w=width):
            torch.manual_seed(0)
            return randomize_(create_model(n, in_channels=1, num_classes=5, width_mult=w)), X28

        yield pytest.param(make, id=name)


def _masked(model, x):
    groups = build_groups(model, x[:1])
    chosen = pick(groups)
    fm = ForwardMask(g for g in groups if g.prunable)
    for key, idxs in chosen.items():
        fm.set(key, idxs)
    fm.attach(model)
    return groups, chosen, fm


@pytest.mark.parametrize("make", list(_cases()))
def test_masked_forward_equals_the_compact_network_in_eval_and_train_mode(make):
    model, x = make()
    compact = copy.deepcopy(model)
    groups, chosen, _ = _masked(model, x)
    assert chosen
    cgroups = {g.key: g for g in build_groups(compact, x[:1])}
    for key, idxs in chosen.items():
        remove_(compact, cgroups[key], idxs)
    for train in (False, True):  # train mode: BN batch statistics of the live channels are the same too
        model.train(train)
        compact.train(train)
        with torch.no_grad():
            torch.testing.assert_close(model(x), compact(x), rtol=1e-5, atol=1e-5)


def _grads(model, x, seed=0):
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(x)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out * target).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _masked_positions(groups, chosen):
    """param name -> boolean tensor of the entries that belong to masked channels' own parameters."""
    out = {}
    for g in groups:
        if g.key not in chosen:
            continue
        for s in g.slices:
            if s.role in MASKED_ROLES:
                name = f"{s.module}.{s.tensor}"
                sel = out.setdefault(name, set())
                sel.update(s.positions(chosen[g.key]))
    return out


@pytest.mark.parametrize("make", list(_cases()))
def test_masked_channels_learn_and_nothing_leaks_upstream(make):
    model, x = make()
    reference = copy.deepcopy(model)
    groups, chosen, _ = _masked(model, x)
    # reference: the classic masked network (weights, BN gamma and beta zeroed), which computes
    # exactly the compact function and whose live parameters get exactly the compact gradients
    rgroups = {g.key: g for g in build_groups(reference, x[:1])}
    for key, idxs in chosen.items():
        soft_mask_(reference, rgroups[key], idxs)
    ours, ref = _grads(model, x), _grads(reference, x)
    own = _masked_positions(groups, chosen)
    moved = 0.0
    for name, g in ours.items():
        live = torch.ones(g.shape[0], dtype=torch.bool)
        dim0 = own.get(name, set())
        if dim0:
            live[sorted(dim0)] = False
            moved = max(moved, g[~live].abs().max().item())
        torch.testing.assert_close(g[live], ref[name][live], rtol=1e-4, atol=1e-6, msg=name)
    assert moved > 0  # the masked channels' own parameters receive a gradient (they can regrow)


def test_paused_gives_a_hook_free_copy_and_detach_restores_the_plain_model():
    model = randomize_(NETS["residual"]())
    plain = copy.deepcopy(model).eval()
    _, _, fm = _masked(model, X)
    model.eval()
    with torch.no_grad():
        masked_out = model(X)
        assert not torch.allclose(masked_out, plain(X))
        with fm.paused():
            clone = copy.deepcopy(model)
            torch.testing.assert_close(model(X), plain(X))
        torch.testing.assert_close(model(X), masked_out)
        torch.testing.assert_close(clone(X), plain(X))  # the copy carries no hooks
        fm.detach()
        torch.testing.assert_close(model(X), plain(X))


def test_masked_filters_regrow_under_sgd_while_the_output_stays_masked():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip
    update_info(model, stem="0", classifier="7")
    group = next(g for g in build_groups(model, X[:1, :1]) if g.prunable)
    fm = ForwardMask([group])
    fm.set(group, [1, 4])
    fm.attach(model)
    before = model[2].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model[2].weight[[1, 4]] - before[[1, 4]]).abs().max() > 1e-4
    probe = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), fm.paused():  # the reference: the plain network with the channels' weights zeroed
        zeroed = copy.deepcopy(model)
    with torch.no_grad():
        soft_mask_(zeroed, next(g for g in build_groups(zeroed, probe[:1]) if g.key == "2"), [1, 4])
        model.eval()
        zeroed.eval()
        torch.testing.assert_close(model(probe), zeroed(probe), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bn", [False, True], ids=["conv-bias", "conv-bn"])
def test_a_masked_channels_own_parameters_get_the_gradient_they_would_get_alive(bn):
    """Straight-through: the masked rows of the writer (weight AND bias) and of its BN get exactly the
    gradient of a network whose consumer reads 0 there but passes its gradient back unchanged."""
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(6)] if bn else []
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), *norm, nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip
    last = len(model) - 1
    update_info(model, stem="0", classifier=str(last))
    with torch.no_grad():
        model[2].bias.uniform_(-0.5, 0.5)
        if bn:
            model[3].weight.uniform_(0.5, 1.5)
            model[3].bias.uniform_(0.2, 0.5)
    reference = copy.deepcopy(model)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    group = next(g for g in build_groups(model, x[:1]) if g.key == "2")
    fm = ForwardMask([group])
    fm.set(group, [1, 4])
    fm.attach(model)
    target = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    model.train()
    (model(x) * target).sum().backward()
    # the reference, by hand: the classifier reads the pooled features with channels 1 and 4
    # zeroed, and the zeroing passes the gradient straight through (value f * m, gradient 1)
    reference.train()
    mask = torch.ones(6)
    mask[[1, 4]] = 0
    f = reference[:last](x)
    f_read = f - (f * (1 - mask)).detach()
    (reference[last](f_read) * target).sum().backward()
    # a conv bias before a train-mode BN has no gradient at all (the batch mean cancels it)
    names = ("2.weight", "3.weight", "3.bias") if bn else ("2.weight", "2.bias")
    for name in names:
        ours, ref = dict(model.named_parameters())[name].grad, dict(reference.named_parameters())[name].grad
        assert ref[[1, 4]].abs().max() > 1e-4, name  # the masked rows do have a gradient to get
        torch.testing.assert_close(ours[[1, 4]], ref[[1, 4]], rtol=1e-5, atol=1e-7, msg=name)
