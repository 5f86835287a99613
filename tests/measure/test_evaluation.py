"""The one evaluation loop and the fixed training slice: numbers equal a hand-written loop, no state leaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.data import DataConfig, build_loaders, training_slice
from prunus.errors import ConfigError
from prunus.measure.evaluation import evaluate
from prunus.models import create_model


@pytest.fixture(scope="module")
def bundle():
    cfg = DataConfig(name="synthetic", num_samples=96, val_size=16, batch_size=16, eval_batch_size=24)
    return build_loaders(cfg, seed=0)


@pytest.fixture(scope="module")
def model(bundle):
    torch.manual_seed(0)
    net = create_model("lenet5", in_channels=bundle.in_channels, num_classes=bundle.num_classes, width_mult=0.5)
    return nn.Sequential(nn.BatchNorm2d(bundle.in_channels), net)


def _hand_loop(model, loader):
    model.eval()
    loss = 0.0
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += y.numel()
    return loss / total, correct / total, total


def test_evaluate_equals_a_hand_written_loop_and_restores_train_mode(bundle, model):
    model.train()
    running_mean = model[0].running_mean.clone()
    result = evaluate(model, bundle.test)
    assert model.training  # mode restored
    assert torch.equal(model[0].running_mean, running_mean)  # eval mode: BN statistics untouched
    loss, acc, n = _hand_loop(model, bundle.test)
    assert result["count"] == n == bundle.test.num_samples
    assert result["acc"] == acc
    assert result["loss"] == pytest.approx(loss, rel=1e-12, abs=0)
    model.eval()
    evaluate(model, bundle.test)
    assert not model.training  # eval stays eval


def test_evaluate_accepts_any_iterable_and_handles_empty():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
        lin.bias.zero_()
    x = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    result = evaluate(lin, [(x[:2], y[:2]), (x[2:], y[2:])])
    assert result["count"] == 3
    assert result["acc"] == pytest.approx(2 / 3)
    expected = float(nn.functional.cross_entropy(x, y, reduction="mean"))
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    assert evaluate(lin, []) == {"loss": 0.0, "acc": 0.0, "count": 0}


def test_evaluate_reports_non_finite_loss_for_the_caller_to_check():
    class Nan(nn.Module):
        def forward(self, x):
            return x * float("nan")

    result = evaluate(Nan(), [(torch.ones(2, 3), torch.tensor([0, 1]))])
    assert result["loss"] != result["loss"]  # nan comes back, it is not hidden


def test_training_slice_is_fixed_and_leaves_the_loader_alone(bundle):
    loader = bundle.train
    loader.set_epoch(3)
    state = (loader.epoch, loader.shuffle, loader.augment, loader.batch_size, loader.indices().clone())
    first_batch = next(iter(loader))[0].clone()
    x1, y1 = training_slice(bundle, 10)
    x2, y2 = training_slice(bundle, 10)
    assert torch.equal(x1, x2)
    assert torch.equal(y1, y2)
    assert (loader.epoch, loader.shuffle, loader.augment, loader.batch_size) == state[:4]
    assert torch.equal(loader.indices(), state[4])
    assert torch.equal(next(iter(loader))[0], first_batch)  # the loader's next epoch is unchanged
    # dataset order, unaugmented, normalised like the loader does (an unshuffled, unaugmented batch)
    data = loader.data
    scale = 1.0 / (255.0 * torch.tensor(data.std, dtype=torch.float64))
    shift = -torch.tensor(data.mean, dtype=torch.float64) / torch.tensor(data.std, dtype=torch.float64)
    expected = data.images[:10].double() * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    assert torch.allclose(x1.double(), expected, atol=1e-5)
    assert torch.equal(y1, data.labels[:10])
    # the same slice from the loader or the dataset itself
    assert torch.equal(training_slice(loader, 10)[0], x1)
    assert torch.equal(training_slice(data, 10)[0], x1)


def test_training_slice_seeded_sample_is_reproducible_and_differs_by_seed(bundle):
    a = training_slice(bundle, 12, seed=1)
    assert torch.equal(a[0], training_slice(bundle, 12, seed=1)[0])
    assert not torch.equal(a[0], training_slice(bundle, 12, seed=2)[0])
    assert len(training_slice(bundle, 10_000)[1]) == len(bundle.train.data)  # capped at the set


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_training_slice_rejects_bad_sizes(bundle, n):
    with pytest.raises(ConfigError, match="training_slice n="):
        training_slice(bundle, n)


def test_training_slice_rejects_non_data():
    with pytest.raises(ConfigError, match="DataBundle, TensorLoader or ImageTensors"):
        training_slice(object(), 4)
