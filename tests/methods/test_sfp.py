"""SFP / FPGM: masks are exact, removal equals masking for every zoo model, hard vs soft, mix, resume, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import prunus
from prunus.criteria import list_criteria
from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method, list_methods
from prunus.methods._pruning import select_channels
from prunus.methods.sfp import REGROW_THRESHOLD
from prunus.models import create_model, list_models
from prunus.models.info import update_info
from prunus.structure import build_groups, group_weights

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _data(n: int = 48, batch: int = 16, val: int = 16):
    cfg = DataConfig(name="synthetic", num_samples=n, val_size=val, batch_size=batch, eval_batch_size=64)
    return build_loaders(cfg, seed=0)


def _model(name: str = "resnet20", data=None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    width = 0.5 if "lenet" in name else 0.25
    return create_model(name, num_classes=10, in_channels=1, width_mult=width)


def _fit(model, methods, epochs=1, data=None, run_dir=None, resume=False, lr=0.05):
    data = data or _data()
    cfg = TrainConfig(epochs=epochs, lr=lr, checkpoint=run_dir is not None)
    trainer = Trainer(model, data, cfg, methods=methods, run_dir=run_dir, resume=resume, progress=False)
    return trainer, trainer.fit()


class Logits(Method):
    """Records eval-mode logits on X when on_fit_end reaches it (before or after SFP's removal)."""

    name = "logits"

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None

    @torch.no_grad()
    def on_fit_end(self, trainer):
        was = trainer.model.training
        trainer.model.eval()
        self.logits = trainer.model(X)
        trainer.model.train(was)


def _masked_rows_zero(model, sfp) -> bool:
    """Every masked channel has zero writer rows and zero BN gamma and beta."""
    for g in sfp.groups:
        idxs = sfp.masks.get(g.key, [])
        if not idxs:
            continue
        t = group_weights(model, g)
        if any(w[idxs].abs().max() != 0 for w in t.writers):
            return False
        for s in g.slices:
            if s.role in ("bn_weight", "bn_bias") and s.get(model)[s.positions(idxs)].abs().max() != 0:
                return False
    return True


@pytest.mark.parametrize("method", ["sfp", "fpgm", "mfp"])
@pytest.mark.parametrize("name", list_models())
def test_zoo_masked_equals_removed_through_fit_end_and_round_trips(name, method, tmp_path):
    before, after = Logits(), Logits()
    m = create_method(method, rate=0.4)
    model = _model(name)
    for mod in model.modules():  # cumulative BN statistics: sane eval-mode logits after two steps
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None
    widths = {g.key: g.num_channels for g in build_groups(model, X[:1]) if g.prunable}
    trainer, result = _fit(model, [before, m, after])
    assert before.logits.abs().max().item() < 100
    assert (before.logits - after.logits).abs().max().item() < 1e-5
    # every prunable group lost floor(N * 0.4) channels
    groups = {g.key: g for g in m.groups}
    assert {k: groups[k].num_channels for k in widths} == {k: n - math.floor(n * 0.4 + 1e-9) for k, n in widths.items()}
    counts = prunus.count(trainer.model, (1, 28, 28))
    assert result[f"{method}_params"] == counts.params < result[f"{method}_params_dense"]
    assert result[f"{method}_macs"] == counts.macs < result[f"{method}_macs_dense"]
    loaded = prunus.load(prunus.save(trainer.model, tmp_path / "m"))  # the removal recorded the input shape
    with torch.no_grad():
        assert torch.equal(loaded(X), trainer.model.eval()(X))


@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion_masks_exactly_floor_n_rate(criterion):
    sfp = create_method("sfp", rate=0.5, criterion=criterion, remove_at_end=False)
    trainer, _ = _fit(_model(), [sfp])
    expected = sum(math.floor(g.num_channels * 0.5) for g in sfp.groups)
    assert sfp.num_masked == expected > 0
    assert _masked_rows_zero(trainer.model, sfp)
    record = trainer.history[-1]
    assert record["sfp_criterion"] == criterion
    assert record["sfp_channels_masked"] == expected


PRUNING_METHODS = ("sfp", "fpgm", "mfp")


def test_pruning_methods_are_registered():
    assert set(PRUNING_METHODS) <= set(list_methods())


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_pruning_methods_mask_then_remove(method):
    m = create_method(method, rate=0.4)
    trainer, result = _fit(_model(), [m], epochs=2)
    assert all(r[f"{method}_updated"] for r in trainer.history)
    assert result[f"{method}_channels_removed"] == trainer.history[-1][f"{method}_channels_masked"] > 0
    assert result[f"{method}_macs"] < result[f"{method}_macs_dense"]


class MaskedProbe(Method):
    """After every step: the largest |masked weight| and |masked momentum| of the SFP masks."""

    name = "probe"

    def __init__(self, sfp) -> None:
        self.sfp = sfp
        self.weights: list[float] = []
        self.momentum: list[float] = []

    def on_step_end(self, trainer):
        if not self.sfp.masks:
            return
        w_max = m_max = 0.0
        for g in self.sfp.groups:
            idxs = self.sfp.masks.get(g.key, [])
            for s in g.slices:
                if s.role in ("out", "bn_weight", "bn_bias") and idxs:
                    p = s.get(trainer.model)
                    pos = s.positions(idxs)
                    w_max = max(w_max, p[pos].abs().max().item())
                    buf = trainer.optimizer.state.get(p, {}).get("momentum_buffer")
                    if buf is not None:
                        m_max = max(m_max, buf[pos].abs().max().item())
        self.weights.append(w_max)
        self.momentum.append(m_max)


def _mix_net() -> tuple[nn.Module, object]:
    """One prunable group of five 1x1 filters with 2-D rows chosen so l2, fpgm and mix all differ."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1),
        nn.Conv2d(2, 5, 1, bias=False),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    update_info(model, stem="0", classifier="6")
    rows = torch.tensor([[-2.0, 1.0], [2.0, -4.0], [-3.0, -2.0], [-1.0, -4.0], [4.0, -3.0]])
    with torch.no_grad():
        model[1].weight.copy_(rows.view(5, 2, 1, 1))
    group = next(g for g in build_groups(model, torch.randn(1, 1, 4, 4)) if g.prunable)
    return model, group


def test_fpgm_mix_ranks_survivors_among_themselves():
    model, group = _mix_net()
    assert group.key == "1"
    # norms 2.24, 4.47, 3.61, 4.12, 5.0; summed distances 21.9, 17.0, 18.4, 16.0, 21.6
    assert select_channels(model, group, "l2", 2) == [0, 2]
    assert select_channels(model, group, "fpgm", 2) == [1, 3]
    # mix: channel 0 by norm, then distances among 1..4 only: channel 1 (not 3, the full-set choice)
    assert select_channels(model, group, "fpgm", 2, mix_ratio=0.5) == [0, 1]
    assert select_channels(model, group, "fpgm", 2, mix_ratio=1.0) == [0, 2]
    assert select_channels(model, group, "fpgm", 2, mix_ratio=0.0) == [1, 3]


def test_rate_schedule_and_interval():
    sfp = create_method("sfp", rate=lambda epoch: 0.25 * (epoch + 1), interval=2, remove_at_end=False)
    trainer, _ = _fit(_model(), [sfp], epochs=3)
    updated = [r["sfp_updated"] for r in trainer.history]
    assert updated == [False, True, True]  # every 2nd epoch, and the last
    masked = [r["sfp_channels_masked"] for r in trainer.history]
    assert masked[0] == 0
    assert masked[1] == sum(math.floor(g.num_channels * 0.5) for g in sfp.groups)
    assert masked[2] == sum(math.floor(g.num_channels * 0.75) for g in sfp.groups)
    assert [r["sfp_rate"] for r in trainer.history[1:]] == [0.5, 0.75]


@pytest.mark.parametrize("hard", [True, False])
def test_resume_continues_exactly(tmp_path, hard):
    data = _data()
    full_sfp = create_method("sfp", rate=0.4, hard=hard)
    full, _ = _fit(_model(), [full_sfp], epochs=3, data=data, run_dir=tmp_path / "a")
    # "crash" after two epochs of a 3-epoch run, then resume from its checkpoint
    part = tmp_path / "b"
    cfg = TrainConfig(epochs=3, lr=0.05)
    first_sfp = create_method("sfp", rate=0.4, hard=hard)
    first = Trainer(_model(), data, cfg, methods=[first_sfp], run_dir=part, progress=False)
    first._run_epoch()
    first._run_epoch()
    resumed_sfp = create_method("sfp", rate=0.4, hard=hard)
    resumed = Trainer(_model(seed=5), data, cfg, methods=[resumed_sfp], run_dir=part, resume=True, progress=False)
    assert resumed_sfp.masks == first_sfp.masks
    assert resumed_sfp.masks
    resumed.fit()
    assert resumed_sfp.state_dict()["updates"] == full_sfp.state_dict()["updates"]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_state_dict_round_trip():
    sfp = create_method("sfp", rate=0.4, hard=True)
    trainer, _ = _fit(_model(), [sfp], epochs=1)
    state = sfp.state_dict()
    assert state == {"masks": {}, "updates": 1, "removed": True, "final_applied": False}
    other = create_method("sfp", rate=0.4)
    saved = {"masks": {"layer1.0.conv1": [0, 2]}, "updates": 3, "removed": False, "final_applied": False}
    other.load_state_dict(saved)
    assert other.state_dict() == saved


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 1.0}, r"rate=1.0 is out of range; expected a value in \[0.0, 1.0\)"),
        ({"rate": -0.1}, "rate=-0.1 is out of range"),
        ({"rate": "half"}, "rate must be a number"),
        ({"criterion": "l3"}, "criterion='l3' is not valid; choose one of: bn-scale, dist-l1"),
        ({"interval": 0}, "interval=0 is not valid; expected an integer >= 1"),
        ({"hard": "yes"}, "hard must be true or false"),
        ({"mix_ratio": 0.5}, "mix_ratio applies to distance criteria only"),
        ({"criterion": "fpgm", "mix_ratio": 1.5}, "mix_ratio=1.5 is out of range"),
        ({"ignored_layers": "fc"}, "ignored_layers must be a list"),
        ({"sparsity": 0.5}, "method 'sfp' has no argument"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_method("sfp", **kwargs)


def test_rate_schedule_out_of_range_fails_when_used():
    sfp = create_method("sfp", rate=lambda epoch: 1.0)
    with pytest.raises(ConfigError, match=r"rate\(0\)=1.0 is out of range"):
        _fit(_model(), [sfp])


def test_fpgm_is_sfp_with_the_fpgm_criterion():
    fpgm = create_method("fpgm")
    assert fpgm.criterion == "fpgm"
    assert fpgm.name == "fpgm"
    assert create_method("fpgm", criterion="dist-l1", mix_ratio=0.25).mix_ratio == 0.25


class GradProbe(Method):
    """After SFP's after_backward (hard: gradients already zeroed): largest |grad| of masked writer rows."""

    name = "gradprobe"

    def __init__(self, sfp) -> None:
        self.sfp = sfp
        self.masked: list[float] = []

    def after_backward(self, trainer):
        if not self.sfp.masks:
            return
        g_max = 0.0
        for g in self.sfp.groups:
            idxs = self.sfp.masks.get(g.key, [])
            for s in g.slices:
                if s.role in ("out", "bn_weight", "bn_bias") and idxs:
                    grad = s.get(trainer.model).grad
                    g_max = max(g_max, grad[s.positions(idxs)].abs().max().item())
        self.masked.append(g_max)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
@pytest.mark.parametrize("hard", [True, False])
def test_masked_channels_get_gradient_in_soft_mode_and_stay_exactly_zero_in_hard_mode(name, hard):
    sfp = create_method("sfp", rate=0.4, hard=hard, remove_at_end=False)
    grads, probe = GradProbe(sfp), MaskedProbe(sfp)
    trainer, _ = _fit(_model(name), [sfp, grads, probe], epochs=3, lr=0.1)
    assert len(grads.masked) == len(probe.weights) == 2 * len(trainer.train_loader)
    if hard:
        assert max(grads.masked) == 0.0
        assert max(probe.weights) == 0.0  # exactly, step after step (mobilenetv2's linear bottlenecks too)
        assert max(probe.momentum) == 0.0
    else:
        assert min(grads.masked) > 0.0  # straight-through: they learn as if alive
        assert min(probe.weights) > 0.0  # and are not zeroed until the final mask
    assert _masked_rows_zero(trainer.model, sfp)  # the final mask zeroes them either way


def test_soft_masked_channels_come_back_and_regrowth_is_counted_by_norm():
    data = _data(n=96, batch=16)
    soft = create_method("sfp", rate=0.4, remove_at_end=False)
    trainer, _ = _fit(_model(), [soft], epochs=5, data=data, lr=0.1)
    history = trainer.history
    assert sum(r["sfp_turnover"] for r in history[1:]) > 0  # masked channels won their place back
    masked = [r["sfp_channels_masked"] for r in history]
    assert all(0 < r["sfp_regrown"] <= m for r, m in zip(history[1:], masked, strict=False))
    assert all(r["sfp_masked_norm"] > REGROW_THRESHOLD for r in history[:-1])  # alive, not decayed
    hard = create_method("sfp", rate=0.4, hard=True, remove_at_end=False)
    trainer, _ = _fit(_model(), [hard], epochs=5, data=data, lr=0.1)
    assert [r["sfp_turnover"] for r in trainer.history] == [0] * 5  # zero filters always rank lowest
    assert [r["sfp_regrown"] for r in trainer.history] == [0] * 5
    assert [r["sfp_masked_norm"] for r in trainer.history] == [0.0] * 5


@pytest.mark.distributed
@pytest.mark.slow
def test_sfp_and_mfp_under_two_process_ddp_resume_exactly_and_ranks_agree(tmp_path, torchrun):
    worker = Path(__file__).with_name("prune_ddp_worker.py")
    proc = torchrun([str(worker), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for method in ("sfp", "mfp"):
        full, resumed = r0[method]["full"], r0[method]["resumed"]
        assert full["weights"].keys() == r1[method]["full"]["weights"].keys()
        for k, v in full["weights"].items():
            assert torch.equal(v, r1[method]["full"]["weights"][k]), (method, k)  # replicas agree
            assert torch.equal(v, resumed["weights"][k]), (method, k)  # a resumed run ends the same
        assert full["history"] == resumed["history"] == r1[method]["full"]["history"]
        assert full["history"][-1][f"{method}_channels_masked"] > 0
    assert all("mfp_choice" in r for r in r0["mfp"]["full"]["history"])
