"""C-SGD: clustering, the centripetal rule's predicted convergence, exact merging, resume, DDP, CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.data import DataConfig, build_loaders, training_slice
from prunus.engine import Method, TrainConfig, Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.methods._clustering import even_clusters, kmeans
from prunus.methods.csgd import CentripetalSGD, group_widths
from prunus.models import create_model, list_models
from prunus.models.info import get_info, update_info
from prunus.structure import build_groups

WORKER = Path(__file__).with_name("csgd_ddp_worker.py")
X28 = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
# roles every member of a cluster must share for the merge to be exact (running stats included)
ROW_ROLES = ("out", "bias", "dw", "dw_bias", "bn_weight", "bn_bias", "bn_mean", "bn_var", "prelu")


def _data(num_samples=256, batch_size=16, image_size=12):
    cfg = DataConfig(
        name="synthetic", val_size=0, batch_size=batch_size, num_samples=num_samples, image_size=image_size, channels=1
    )
    return build_loaders(cfg, seed=0)


def _resnet(data, width_mult=0.25, seed=0):
    torch.manual_seed(seed)
    return create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=width_mult)


def _randomize_(model):
    """Random BN affine parameters and running statistics measured on data (so logits stay O(1) at depth)."""
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the stats of the batch below
        model.train()(X28)
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def _make_identical_(model, group, clusters):
    """Copy each cluster's first member onto the others in every writer-side tensor."""
    with torch.no_grad():
        for s in group.slices:
            if s.role in ROW_ROLES:
                t = s.get(model)
                for c in clusters:
                    src = t.index_select(s.dim, torch.tensor(s.positions([c[0]])))
                    for other in c[1:]:
                        t.index_copy_(s.dim, torch.tensor(s.positions([other])), src)


# ------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, r"csgd.width=0 is out of range"),
        ({"width": 1.5}, r"csgd.width=1.5 is out of range"),
        ({"width": 16}, r"must be a ratio in \(0, 1\]"),
        ({"widths": {"layer1.0.conv1": 0}}, r"channel count must be >= 1"),
        ({"widths": {"layer1.0.conv1": 1.2}}, r"out of range"),
        ({"eps": -0.1}, r"csgd.eps=-0.1"),
        ({"cluster": "spectral"}, r"choose one of: kmeans, even"),
        ({"log_every": 0}, r"log_every must be an integer >= 1"),
        ({"speed": 2}, r"accepted: .*width"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_method("csgd", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": {"layer1.0.conv1": 5}}, r"width 5 for group 'layer1.0.conv1' must lie in \[1, 4\]"),
        ({"width": 0.1}, r"leaves no channel of group 'layer1.0.conv1'"),
        ({"widths": {"conv1": 2}}, r"'conv1', which is not a prunable group"),
        ({"widths": {"nope": 2}}, r"'nope', which is not a prunable group; groups: layer1.0.conv1"),
    ],
)
def test_widths_that_do_not_fit_the_model_raise(kwargs, match):
    model = create_model("resnet20", in_channels=1, width_mult=0.25)  # 4/8/16 channels
    with pytest.raises(ConfigError, match=match):
        CentripetalSGD(**kwargs).plan(model, X28[:1])


# ------------------------------------------------------------------------------ clustering
def test_kmeans_never_leaves_a_cluster_empty_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    # 12 identical points plus 4 distinct ones: Lloyd alone would leave clusters empty for k=8
    pts = torch.cat([torch.zeros(12, 5), torch.randn(4, 5, generator=gen) * 10])
    for k in (1, 3, 8, 16):
        cl = kmeans(pts, k, seed=3)
        assert len(cl) == k
        assert all(cl)
        assert sorted(i for c in cl for i in c) == list(range(16))
        assert cl == kmeans(pts, k, seed=3)
    blobs = torch.cat([torch.randn(5, 3, generator=gen) * 0.01 + c for c in (0.0, 5.0, -5.0)])
    assert kmeans(blobs, 3, seed=7) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]


def test_even_clustering_gives_consecutive_blocks():
    assert even_clusters(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    model = create_model("resnet20", in_channels=1, width_mult=0.5)
    clusters = CentripetalSGD(width=0.625, cluster="even").plan(model, X28[:1])
    assert clusters["layer3.0.conv1"] == even_clusters(32, 20)
    assert {k: len(c) for k, c in clusters.items()}["layer2.0.conv2"] == 10


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", list_models())
def test_merging_identical_members_is_exact_for_every_model(name, tmp_path):
    torch.manual_seed(0)
    model = _randomize_(create_model(name, in_channels=1, width_mult=0.25)).eval()
    method = CentripetalSGD(width=0.5, seed=1)
    clusters = method.plan(model, X28[:1])
    assert clusters, f"{name}: nothing to cluster"
    groups = {g.key: g for g in build_groups(model, X28[:1])}
    expected = {}
    for key, cl in clusters.items():
        _make_identical_(model, groups[key], cl)
        expected[key] = len(cl)
        assert len(cl) == math.floor(groups[key].num_channels * 0.5 + 0.5)
    report = method.merge(model, inputs=X28)
    assert report["csgd_max_logit_diff"] < 1e-5
    assert report["csgd_params_after"] < report["csgd_params_before"]
    widths = {g.key: g.num_channels for g in build_groups(model, X28[:1])}
    assert {k: widths[k] for k in expected} == expected
    update_info(model, input_shape=(1, 28, 28))
    loaded = prunus.load(prunus.save(model, tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(X28), model.eval()(X28))


def test_merging_without_convergence_is_not_exact():
    """Control for the test above: the logit difference reports unconverged members."""
    model = _randomize_(create_model("resnet20", in_channels=1, width_mult=0.25)).eval()
    method = CentripetalSGD(width=0.5)
    with pytest.raises(ConfigError, match="no clusters to merge"):
        method.merge(model, inputs=X28)
    method.plan(model, X28[:1])
    assert method.merge(model, inputs=X28)["csgd_max_logit_diff"] > 1e-3


# ------------------------------------------------------------------------- the update rule
def test_weight_decay_of_clustered_tensors_is_switched_off():
    data = _data()
    method = CentripetalSGD(width=0.5)
    trainer = Trainer(_resnet(data), data, TrainConfig(epochs=1, weight_decay=5e-4), [method], progress=False)
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    clustered = {id(p.param) for p in method._parts}
    groups = {g.key: g for g in build_groups(trainer.model, torch.randn(1, *data.input_shape))}
    # conv + BN gamma + BN beta of every writer in the 11 clustered groups (a residual stream has 4 writers)
    writers = sum(len(groups[k].modules("out")) for k in method.clusters)
    assert len(method.clusters) == 11
    assert len(clustered) == 3 * writers == 51
    assert all(decay[i] == 0.0 for i in clustered)
    assert decay[id(trainer.model.conv1.weight)] == 5e-4  # the stem is not clustered
    assert decay[id(trainer.model.bn1.weight)] == 5e-4


def test_gradient_rule_on_a_hand_computed_case():
    data = _data()
    method = CentripetalSGD(widths={"layer1.0.conv1": 2}, width=1.0, cluster="even", eps=0.3, bn_eps_factor=0.5)
    trainer = Trainer(_resnet(data), data, TrainConfig(epochs=1, weight_decay=0.01), [method], progress=False)
    conv, bn = trainer.model.layer1[0].conv1, trainer.model.layer1[0].bn1
    with torch.no_grad():  # gamma away from 1: the BN half of the rule is not vacuous
        bn.weight.copy_(torch.tensor([0.5, 1.5, 2.0, 0.25]))
    g = torch.randn_like(conv.weight)
    conv.weight.grad, bn.weight.grad = g.clone(), torch.ones(4)
    method.after_backward(trainer)
    w = conv.weight.detach()
    for c in ([0, 1], [2, 3]):
        for j in c:
            want = g[c].mean(0) + 0.01 * w[j] + 0.3 * (w[j] - w[c].mean(0))
            torch.testing.assert_close(conv.weight.grad[j], want)
    gamma = bn.weight.detach()
    want = 1 + 0.15 * (gamma - gamma.view(2, 2).mean(1).repeat_interleave(2))  # no decay on BN vectors
    torch.testing.assert_close(bn.weight.grad, want)


def test_eps_may_be_a_schedule_of_the_epoch():
    data = _data(num_samples=32)
    method = CentripetalSGD(width=0.5, eps=lambda epoch: 0.1 * (epoch + 1), merge_at_end=False)
    trainer = Trainer(_resnet(data), data, TrainConfig(epochs=2, checkpoint=False), [method], progress=False)
    trainer.fit()
    assert [r["csgd_eps"] for r in trainer.history] == pytest.approx([0.1, 0.2])
    with pytest.raises(ConfigError, match="csgd.eps at epoch 0"):
        Trainer(_resnet(data), data, TrainConfig(epochs=1), [CentripetalSGD(eps=lambda e: -1.0)], progress=False)


def test_chi_decays_at_the_predicted_rate():
    """Zero data gradient, plain momentum SGD, constant lr: sqrt(chi) ~ exp(-lr (wd + eps) t / (1 - m))."""
    lr, wd, eps, mom = 0.01, 5e-4, 0.05, 0.9
    data = _data()
    method = CentripetalSGD(width=0.5, eps=eps)
    cfg = TrainConfig(epochs=1, lr=lr, momentum=mom, nesterov=False, weight_decay=wd, schedule="constant")
    trainer = Trainer(_resnet(data), data, cfg, [method], progress=False)
    params = list(trainer.model.parameters())
    ts, logs = [], []
    for t in range(1, 1201):
        for p in params:
            p.grad = torch.zeros_like(p)
        method.after_backward(trainer)
        trainer.optimizer.step()
        if t >= 300 and t % 50 == 0:
            ts.append(t)
            logs.append(0.5 * math.log(method.deviation()["csgd_chi"]))
    t_mean, l_mean = sum(ts) / len(ts), sum(logs) / len(logs)
    slope = sum((a - t_mean) * (b - l_mean) for a, b in zip(ts, logs)) / sum((a - t_mean) ** 2 for a in ts)
    theory = lr * (wd + eps) / (1 - mom)
    print(f"measured rate {-slope:.5f}/step, theory {theory:.5f}/step")
    assert -slope == pytest.approx(theory, rel=0.2)


# ------------------------------------------------------------------ training, resume, merge
class _KeepUnmerged(Method):
    """Runs before C-SGD's on_fit_end: keeps a copy of the trained, unmerged model."""

    name = "keep"

    def on_fit_end(self, trainer):
        self.model = copy.deepcopy(trainer.model).eval()


def test_fit_collapses_members_and_merge_keeps_the_function(tmp_path):
    data = _data(num_samples=512)
    keep, method = _KeepUnmerged(), CentripetalSGD(width=0.5, eps=0.3, bn_eps_factor=1.0, log_every=8)
    cfg = TrainConfig(epochs=8, lr=0.05, schedule="constant", checkpoint=False)
    trainer = Trainer(_resnet(data), data, cfg, [keep, method], progress=False)
    result = trainer.fit()  # 256 steps
    assert method.trace[-1][1] < 1e-8 * method.trace[0][1]  # chi collapsed
    x = training_slice(data, 256)[0]  # the fixed batch merge compares logits on (never the test set)
    with torch.no_grad():
        own = float((keep.model(x) - trainer.model.eval()(x)).abs().max())
    assert own < 1e-3
    assert result["csgd_max_logit_diff"] == pytest.approx(own, rel=1e-4, abs=1e-7)
    assert result["final_test_acc"] == result["csgd_merged_acc"]
    assert abs(result["csgd_merged_acc"] - result["csgd_trained_acc"]) < 1e-9
    assert result["csgd_macs_after"] < 0.5 * result["csgd_macs_before"]
    assert {k for k in trainer.history[-1] if k.startswith("csgd_")} >= {"csgd_chi", "csgd_max_dev", "csgd_bn_max_dev"}
    update_info(trainer.model, input_shape=data.input_shape)
    loaded = prunus.load(prunus.save(trainer.model, tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(x), trainer.model(x))


def test_resume_keeps_clusters_and_gives_identical_weights(tmp_path):
    data = _data(num_samples=64)
    cfg = TrainConfig(epochs=2, lr=0.05)
    full_m = CentripetalSGD(width=0.5, merge_at_end=False)
    full = Trainer(_resnet(data), data, cfg, [full_m], tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(
        _resnet(data), data, cfg, [CentripetalSGD(width=0.5, merge_at_end=False)], tmp_path / "part", progress=False
    )
    part._run_epoch()
    # a different seed would cluster differently: the checkpoint's clusters must win
    resumed_m = CentripetalSGD(width=0.5, seed=99, merge_at_end=False)
    fresh = copy.deepcopy(resumed_m)
    fresh.plan(_resnet(data), torch.randn(1, *data.input_shape))
    assert fresh.clusters != full_m.clusters
    resumed = Trainer(_resnet(data, seed=5), data, cfg, [resumed_m], tmp_path / "part", resume=True, progress=False)
    assert resumed_m.clusters == full_m.clusters
    resumed.fit()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["methods"]["csgd"]
    assert state["clusters"] == full_m.clusters
    assert state["steps"] == 2 * len(data.train)


def test_resume_under_a_budget_restores_the_planned_widths_instead_of_re_planning(tmp_path, monkeypatch):
    """A latency plan re-measured on resume may narrow other groups (other clusters, other weight-decay
    groups: the optimizer state no longer fits). The resumed run must take the checkpoint's plan."""
    data = _data(num_samples=64)
    cfg = TrainConfig(epochs=2, lr=0.05)
    full = Trainer(_resnet(data), data, cfg, [CentripetalSGD(keep_macs=0.6, merge_at_end=False)], progress=False)
    full.fit()
    planned = dict(full.methods[0].widths)
    part = Trainer(
        _resnet(data), data, cfg, [CentripetalSGD(keep_macs=0.6, merge_at_end=False)], tmp_path, progress=False
    )
    part._run_epoch()

    def replanned(*args, **kwargs):
        raise AssertionError("the resumed run planned its widths again")

    monkeypatch.setattr("prunus.methods.csgd.plan_budget", replanned)
    method = CentripetalSGD(keep_macs=0.6, merge_at_end=False)
    resumed = Trainer(_resnet(data, seed=5), data, cfg, [method], tmp_path, resume=True, progress=False)
    assert method.widths == planned
    assert resumed.epoch == 1
    resumed.fit()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# ----------------------------------------------------------- rounds, train wider then squeeze
def test_rounds_narrow_geometrically_to_the_one_shot_widths(tmp_path):
    # the one rounds loop is the csgd stage's (`prunus csgd --rounds` runs it too)
    from prunus.formats.run_dir import RunDir
    from prunus.pipeline import run_pipeline
    from prunus.pipeline.recipe import single_chain

    data = _data(num_samples=32)
    model = _resnet(data, width_mult=0.5)  # 8/16/32
    prunus.save(model, tmp_path / "dense", input_shape=data.input_shape)
    data_cfg = {
        "name": "synthetic",
        "val_size": 0,
        "batch_size": 16,
        "num_samples": 32,
        "image_size": 12,
        "channels": 1,
    }
    stage = {"stage": "csgd", "width": 0.25, "rounds": 2, "args": {"eps": 0.1}, "data": data_cfg,
             "train": {"epochs": 1, "lr": 0.05}}  # fmt: skip
    run_pipeline(single_chain([stage], name="csgd", input=tmp_path / "dense"), tmp_path / "run", progress=False,
                 echo=lambda line: None)  # fmt: skip
    where = RunDir(tmp_path / "run").stage("main", 0, 1, "csgd", layout="single")
    x = torch.randn(1, *data.input_shape)
    assert group_widths(prunus.load(where.round(1).model), x)["layer3.0.conv1"] == 16  # 32 * 0.25 ** (1/2)
    final = prunus.load(where.round(2).model)
    widths = group_widths(final, x)
    assert widths["layer3.0.conv1"] == 8
    assert widths["layer1.0.conv1"] == 2
    assert [e["op"] for e in get_info(final).history].count("merge") == 2 * 11


def test_train_wider_then_squeeze_to_the_narrow_architecture():
    data = _data(num_samples=32)
    x = torch.randn(1, *data.input_shape)
    narrow = create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=0.25)
    wide = _resnet(data, width_mult=0.5)
    # the stem's stream is clustered too, so every shape can match the narrow model
    method = CentripetalSGD(widths=group_widths(narrow, x, ["fc"]), ignored_layers=["fc"], eps=0.1)
    Trainer(wide, data, TrainConfig(epochs=1), [method], progress=False).fit()
    assert {k: v.shape for k, v in wide.state_dict().items()} == {k: v.shape for k, v in narrow.state_dict().items()}


# ------------------------------------------------------------------------------------- CLI
def test_cli_train_with_csgd_and_csgd_command(tmp_path, capsys):
    common = ["--data", "synthetic", "--subset", "128", "--val-size", "0", "--batch-size", "32", "--no-progress"]
    base = ["train", "--model", "lenet5", "--width-mult", "0.5", "--epochs", "1", *common]
    assert main([*base, "--method", "csgd", "--width", "0.5", "--eps", "0.2", "--out", str(tmp_path / "t")]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["metrics"]["csgd_params_after"] < summary["metrics"]["csgd_params_before"]
    assert prunus.load(tmp_path / "t" / "model").conv2.out_channels == 4

    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    args = ["csgd", str(tmp_path / "b" / "model"), "--width", "0.5", "--eps", "0.2", "--epochs", "1"]
    assert main([*args, "--set", "cluster=even", "--no-progress", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "trained (unmerged)" in out
    assert "max |logit diff|" in out
    merged = prunus.load(tmp_path / "c")  # the merged model of the command's run directory
    assert (merged.conv2.out_channels, merged.fc1.out_features) == (4, 30)
    assert main([*args, "--width", "2", "--out", str(tmp_path / "d")]) == 2
    assert "csgd.width=2.0 is out of range" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- DDP
@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_clusters_and_weights(tmp_path, torchrun):
    proc = torchrun([str(WORKER), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["clusters"]
    assert r0["clusters"] == r1["clusters"]
    assert r0["planned_differently"]  # each rank's own k-means seed would have disagreed
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:  # parameters and BN running statistics alike (the trainer syncs buffers)
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    assert r0["report"]["csgd_params_after"] < r0["report"]["csgd_params_before"]


# ------------------------------------------------------------------------- defaults that merge
def test_auto_eps_is_the_rule_of_thumb_when_momentum_does_not_saturate():
    data = _data(num_samples=32)  # 2 steps per epoch
    lr, m, wd, tol = 1e-3, 0.9, 5e-4, 1e-6
    cfg = TrainConfig(epochs=300, lr=lr, momentum=m, weight_decay=wd, schedule="constant")
    method = CentripetalSGD(width=0.5, tol=tol)
    Trainer(_resnet(data), data, cfg, [method], progress=False)  # setup only
    steps = 600  # > ln(1 / tol) / (-ln(m) / 2) = 262 steps: the lr-limited regime
    assert method._eps_at(0) == pytest.approx((1 - m) * math.log(1 / tol) / (lr * steps) - wd, rel=1e-3)
    assert method.predicted_residual == pytest.approx(tol, rel=1e-3)


def test_an_eps_that_cannot_reach_the_tolerance_warns_with_what_to_do():
    data = _data(num_samples=32)
    with pytest.warns(UserWarning, match=r"eps=0.01, 4 steps .* predicted to end 0.9\d of their initial distance"):
        Trainer(_resnet(data), data, TrainConfig(epochs=2, lr=0.05), [CentripetalSGD(eps=0.01)], progress=False)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_default_settings_merge_exactly(optimizer, recwarn):
    data = _data(num_samples=256, batch_size=8)  # 32 steps per epoch
    lr = 0.05 if optimizer == "sgd" else 2e-3
    cfg = TrainConfig(epochs=12, lr=lr, optimizer=optimizer, checkpoint=False)  # cosine, nesterov, wd 5e-4
    keep, method = _KeepUnmerged(), CentripetalSGD(width=0.5)  # eps="auto", bn_eps_factor=1.0
    trainer = Trainer(_resnet(data), data, cfg, [keep, method], progress=False)
    assert not [w for w in recwarn if "C-SGD" in str(w.message)]
    assert method.predicted_residual <= 1e-6
    result = trainer.fit()
    assert result["csgd_max_logit_diff"] < 1e-3
    assert result["csgd_merged_acc"] == result["csgd_trained_acc"]
    d = method.deviation() if method._parts else None
    assert d is None  # merged: nothing left to pull
    x = next(iter(data.test))[0]
    with torch.no_grad():
        assert float((keep.model(x) - trainer.model.eval()(x)).abs().max()) < 1e-3


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_trains_with_csgd_pulls_members_together_and_merges(name, tmp_path):
    data = _data(num_samples=32, image_size=28)
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=data.num_classes, width_mult=0.5 if "lenet" in name else 0.25)
    method = CentripetalSGD(width=0.5)
    with pytest.warns(UserWarning, match="predicted to end"):  # 2 steps cannot merge exactly: it says so
        trainer = Trainer(model, data, TrainConfig(epochs=1, lr=0.05, checkpoint=False), [method], progress=False)
    chi0 = method.deviation()["csgd_chi"]
    result = trainer.fit()
    assert method.trace[-1][1] < 0.5 * chi0  # the centripetal rule acts on every architecture
    assert result["csgd_params_after"] < result["csgd_params_before"]
    assert result["csgd_macs_after"] < result["csgd_macs_before"]
    loaded = prunus.load(prunus.save(trainer.model, tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(X28), trainer.model.eval()(X28))


def test_the_defaults_are_the_ones_that_merge():
    method = CentripetalSGD()
    assert (method.eps, method.tol, method.bn_eps_factor) == ("auto", 1e-6, 1.0)


def test_auto_eps_knows_momentum_caps_the_rate_and_warns_when_the_run_is_too_short():
    # 100 steps at a constant lr would need 0.138 per step; heavy-ball momentum 0.9 gives at most
    # -ln(0.9)/2 = 0.053 per step whatever eps: the tolerance cannot be reached and it says so
    data = _data(num_samples=32)  # 2 steps per epoch
    cfg = TrainConfig(epochs=50, lr=0.05, momentum=0.9, schedule="constant")
    method = CentripetalSGD(width=0.5)
    with pytest.warns(
        UserWarning,
        match=r"eps='auto' \(at its largest safe value .*\), 100 steps.*will not be exact; use more epochs or a larger lr",
    ):
        Trainer(_resnet(data), data, cfg, [method], progress=False)
    assert method.predicted_residual == pytest.approx(math.exp(-100 * -0.5 * math.log(0.9)), rel=1e-6)
