"""The training loop does what its config says, checked against a hand-written loop, number for number.

Each case here exists because a one-line bug that silently drops the setting survived the rest of
the suite (tools/mutants.yaml lists them): label smoothing, gradient clipping, warm-up, nesterov,
a new data order and new crops every epoch, and the global RNG restored on resume.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer


def _data(num_samples=48, batch_size=16, augment=False):
    cfg = DataConfig(
        name="synthetic",
        num_samples=num_samples,
        val_size=0,
        batch_size=batch_size,
        eval_batch_size=64,
        image_size=8,
        channels=1,
        augment=augment,
    )
    return build_loaders(cfg, seed=0)


def _net(seed=0, dropout=0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(16, 10))


def _hand_loop(model, data, *, epochs, lr, momentum, nesterov, wd, smoothing, clip, warmup_epochs):
    """What the trainer must compute, written out: SGD with L2 decay, (nesterov) momentum, linear
    warm-up then a constant lr, smoothed cross-entropy, global-norm clipping."""
    params = list(model.parameters())
    bufs = [None] * len(params)
    steps_per_epoch = len(data.train)
    warmup = round(warmup_epochs * steps_per_epoch)
    step = 0
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for x, y in data.train:
            factor = (step + 1) / warmup if step < warmup else 1.0
            logp = torch.log_softmax(model(x), 1)
            nll = -logp.gather(1, y[:, None]).squeeze(1)
            loss = ((1 - smoothing) * nll - smoothing * logp.mean(1)).mean()
            grads = torch.autograd.grad(loss, params)
            if clip is not None:
                norm = torch.sqrt(sum((g * g).sum() for g in grads))
                grads = [g * min(1.0, clip / (float(norm) + 1e-6)) for g in grads]
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    g = g + wd * p
                    bufs[i] = g.clone() if bufs[i] is None else momentum * bufs[i] + g
                    d = g + momentum * bufs[i] if nesterov else bufs[i]
                    p -= lr * factor * d
            step += 1
    return model


CASES = {
    "plain momentum": {},
    "nesterov": {"nesterov": True},
    "label smoothing": {"label_smoothing": 0.3},
    "gradient clipping": {"max_grad_norm": 0.05},
    "warm-up": {"warmup_epochs": 1.5},
}


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_matches_the_hand_written_loop(case):
    cfg = {
        "epochs": 2,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-3,
        "schedule": "constant",
        "label_smoothing": 0.0,
        "max_grad_norm": None,
        "warmup_epochs": 0.0,
        "checkpoint": False,
        **CASES[case],
    }
    data = _data()
    trainer = Trainer(_net(), data, TrainConfig(**cfg), progress=False)
    trainer.fit()
    want = _hand_loop(
        _net(),
        data,
        epochs=cfg["epochs"],
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nesterov"],
        wd=cfg["weight_decay"],
        smoothing=cfg["label_smoothing"],
        clip=cfg["max_grad_norm"],
        warmup_epochs=cfg["warmup_epochs"],
    )
    for (name, a), b in zip(trainer.model.state_dict().items(), want.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    # the setting matters: the plain loop ends elsewhere (so the comparison above has teeth)
    if CASES[case]:
        plain = _hand_loop(
            _net(), data, epochs=2, lr=0.1, momentum=0.9, nesterov=False, wd=1e-3, smoothing=0.0, clip=None,
            warmup_epochs=0.0,
        )  # fmt: skip
        diff = max((a - b).abs().max().item() for a, b in zip(plain.parameters(), want.parameters(), strict=True))
        assert diff > 1e-3, case


def test_every_epoch_draws_a_new_order_and_new_crops():
    data = _data(augment=True)
    model = _net()
    firsts: list[torch.Tensor] = []
    step = {"n": 0}

    def grab(module, inputs):
        if module.training and step["n"] % len(data.train) == 0:
            firsts.append(inputs[0].detach().clone())
        step["n"] += module.training

    model.register_forward_pre_hook(grab)
    Trainer(model, data, TrainConfig(epochs=2, lr=0.01, checkpoint=False), progress=False).fit()
    assert len(firsts) == 2
    assert not torch.equal(firsts[0], firsts[1])
    for epoch, x in enumerate(firsts):  # and each is the loader's first batch of that epoch
        data.train.set_epoch(epoch)
        assert torch.equal(x, next(iter(data.train))[0])


def test_resume_restores_the_global_rng_so_dropout_continues_identically(tmp_path):
    data = _data()
    cfg = TrainConfig(epochs=2, lr=0.05)
    full = Trainer(_net(dropout=0.5), data, cfg, run_dir=tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(_net(dropout=0.5), data, cfg, run_dir=tmp_path / "part", progress=False)
    part._run_epoch()
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = Trainer(_net(seed=7, dropout=0.5), data, cfg, run_dir=tmp_path / "part", resume=True, progress=False)
    resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_warmup_lr_is_the_linear_ramp_at_every_step():
    data = _data()
    seen = []
    model = _net()
    trainer = Trainer(
        model, data, TrainConfig(epochs=2, lr=0.2, warmup_epochs=1.0, schedule="constant"), progress=False
    )
    model.register_forward_pre_hook(
        lambda m, i: seen.append(trainer.optimizer.param_groups[0]["lr"]) if m.training else None
    )
    trainer.fit()
    n = len(data.train)
    want = [0.2 * (s + 1) / n for s in range(n)] + [0.2] * n
    assert seen == pytest.approx(want)
    assert not math.isclose(seen[0], seen[-1])
