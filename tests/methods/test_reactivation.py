"""WE and grafting as Trainer plug-ins: logs, untouched state, in-process populations, resume, composition."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.engine.parallel import fit_population, network_seed
from prunus.engine.peers import Lockstep
from prunus.errors import ConfigError, PeerError
from prunus.formats.run_dir import RunDir
from prunus.methods import create_method
from prunus.models import create_model
from prunus.structure import group_weights


def _data(seed: int = 0, n: int = 32):
    cfg = DataConfig(name="synthetic", num_samples=n, val_size=0, batch_size=16, eval_batch_size=64)
    return build_loaders(cfg, seed=seed)


def _model(seed: int, name: str = "resnet20"):
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_channels=1, width_mult=0.25)


def _cfg(seed: int = 0, epochs: int = 2, **kw):
    return TrainConfig(epochs=epochs, lr=0.05, seed=seed, checkpoint=kw.pop("checkpoint", False), **kw)


class Order(Method):
    """Records which methods' epoch-end effects it sees (runs last)."""

    name = "order"

    def __init__(self, log):
        self.log = log

    def on_epoch_end(self, trainer):
        self.log.append(dict(trainer._epoch_metrics))


# ------------------------------------------------------------------------------------- WE


def test_we_logs_counts_and_leaves_linear_bias_stats_and_optimizer_alone():
    model = _model(0)
    trainer = Trainer(
        model, _data(), _cfg(epochs=1), methods=[create_method("we", ratio_conv=0.3, lam=1.0)], progress=False
    )
    seen = {}

    class Snapshot(Method):
        name = "snap"

        def on_epoch_end(self, t):  # runs before WE: what WE must leave as it is
            seen["state"] = {k: v.clone() for k, v in t.model.state_dict().items()}
            seen["opt"] = {id(p): {k: v.clone() for k, v in s.items()} for p, s in t.optimizer.state.items()}

    trainer.methods.insert(0, Snapshot())
    trainer.fit()
    rec = trainer.history[-1]
    assert rec["we_filters"] > 0
    assert rec["we_slices"] >= rec["we_filters"]
    assert rec["we_ratio_conv"] == pytest.approx(0.3 * 0.5)  # epoch 0 of one phase: sigmoid(0) = 1/2
    after = model.state_dict()
    for k, v in seen["state"].items():
        if k.startswith("fc.") or "running_" in k or "num_batches" in k:
            assert torch.equal(v, after[k]), k
    assert any(not torch.equal(seen["state"][k], after[k]) for k in after if k.endswith("conv1.weight"))
    for p, s in trainer.optimizer.state.items():
        for k, v in s.items():
            assert torch.equal(seen["opt"][id(p)][k], v), k


def test_we_reset_momentum_zeroes_exactly_the_evolved_rows():
    model = _model(0)
    we = create_method("we", ratio_conv=0.3, lam=1.0, reset_momentum=True)
    trainer = Trainer(model, _data(), _cfg(epochs=1), methods=[we], progress=False)
    trainer.fit()
    conv = model.conv1.weight
    buf = trainer.optimizer.state[conv]["momentum_buffer"]
    zero_rows = buf.flatten(1).abs().sum(1) == 0
    assert trainer.history[-1]["we_filters"] > 0
    assert (
        int(
            sum(
                int((trainer.optimizer.state[m.weight]["momentum_buffer"].flatten(1).abs().sum(1) == 0).sum())
                for m in model.modules()
                if isinstance(m, torch.nn.Conv2d)
            )
        )
        == trainer.history[-1]["we_filters"]
    )
    assert zero_rows.sum() <= conv.shape[0] // 2


def test_we_phases_follow_step_milestones_and_bad_arguments_raise():
    we = create_method("we")
    cfg = TrainConfig(epochs=20, schedule="step", milestones=(10,))

    class T:
        config = cfg

    assert we._phases(T()) == [0, 10]
    T.config = TrainConfig(epochs=20)
    assert we._phases(T()) == [0]
    with pytest.raises(ConfigError, match="mode='x'"):
        create_method("we", mode="x")
    with pytest.raises(ConfigError, match="ratio_conv"):
        create_method("we", ratio_conv=1.5)
    with pytest.raises(ConfigError, match="phases"):
        create_method("we", phases=[3, 1])


class StopAt(Method):
    """Raises KeyboardInterrupt (a kill) at the start of epoch `epoch` on network `rank`; -1 = never."""

    name = "stop"

    def __init__(self, epoch=-1, rank=0, hook="on_epoch_start"):
        self.epoch, self.rank, self.hook = epoch, rank, hook

    def on_epoch_start(self, t):
        if self.hook == "on_epoch_start" and (t.epoch, t.rank) == (self.epoch, self.rank):
            raise KeyboardInterrupt

    def on_epoch_end(self, t):
        if self.hook == "on_epoch_end" and (t.epoch, t.rank) == (self.epoch, self.rank):
            raise KeyboardInterrupt


def test_we_resume_is_exact(tmp_path):
    def run(stop):
        d = tmp_path / str(stop)
        if stop:
            with pytest.raises(KeyboardInterrupt):
                Trainer(
                    _model(0), _data(), _cfg(checkpoint=True), [create_method("we"), StopAt(1)], d, progress=False
                ).fit()
        t = Trainer(
            _model(0), _data(), _cfg(checkpoint=True), [create_method("we"), StopAt()], d, resume=True, progress=False
        )
        t.fit()
        return t

    a, b = run(False), run(True)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.methods[0].counters == b.methods[0].counters


# ------------------------------------------------------------------------------- grafting


def _graft_net(strategy, run_root=None, methods=("graft", StopAt), epochs=2, resume=False):
    seed = network_seed(0, strategy.rank)
    model = _model(seed)
    run_dir = run_root / f"net{strategy.rank}" if run_root is not None else None
    ms = [create_method(m) if isinstance(m, str) else m() for m in methods]
    cfg = _cfg(seed, epochs=epochs, checkpoint=run_dir is not None)
    return Trainer(model, _data(seed), cfg, ms, run_dir, resume=resume, progress=False, parallel=strategy)


def test_in_process_ring_of_two_is_identical_after_each_graft():
    results = fit_population(lambda s: _graft_net(s, epochs=1), 2)
    (t0, _), (t1, _) = results
    s0, s1 = t0.model.state_dict(), t1.model.state_dict()
    for k in s0:
        if "num_batches" not in k:
            assert torch.equal(s0[k], s1[k]), k
    alphas = t0.history[-1]["graft_alpha"], t1.history[-1]["graft_alpha"]
    assert len(alphas[0]) == sum(isinstance(m, torch.nn.Conv2d) for m in t0.model.modules())
    assert all(a + b == pytest.approx(1.0, abs=1e-6) for a, b in zip(*alphas))
    assert "graft_invalid_0.1" in t0.history[-1]
    assert "graft_invalid_0.01_after" in t1.history[-1]


def test_three_networks_graft_from_the_previous_networks_pre_graft_weights():
    pre = {}

    class Keep(Method):
        name = "keep"

        def on_epoch_end(self, t):
            pre[t.rank] = t.model.conv1.weight.detach().clone()

    results = fit_population(lambda s: _graft_net(s, methods=(Keep, "graft"), epochs=1), 3)
    for k, (t, _) in enumerate(results):
        a = t.history[-1]["graft_alpha"][0]
        expected = a * pre[k] + (1 - a) * pre[(k - 1) % 3]
        torch.testing.assert_close(t.model.conv1.weight, expected, rtol=0, atol=1e-5)


def test_ring_graft_without_peers_and_mismatched_networks_raise():
    with pytest.raises(ConfigError, match="at least 2 networks"):
        Trainer(_model(0), _data(), _cfg(), [create_method("graft")], progress=False)

    def make(s):
        model = create_model("resnet20" if s.rank == 0 else "lenet5", num_classes=10, in_channels=1, width_mult=0.25)
        return Trainer(model, _data(), _cfg(), [create_method("graft")], progress=False, parallel=s)

    with pytest.raises(ConfigError, match="layers differ"):
        fit_population(make, 2)


def test_single_network_variants_run_and_log():
    for variant in ("noise", "internal"):
        t = Trainer(
            _model(0), _data(), _cfg(epochs=1), [create_method("graft", variant=variant, threshold=1.0)], progress=False
        )
        t.fit()
        assert t.history[-1]["graft_touched"] >= 0
        assert t.history[-1]["graft_invalid_0.1"] >= t.history[-1]["graft_invalid_0.1_after"] or variant == "noise"


def test_killed_population_resumes_every_network_exactly(tmp_path):
    full = fit_population(lambda s: _graft_net(s, tmp_path / "full", epochs=3), 2)

    # network 1 dies in epoch 1's end hooks: network 0 has already checkpointed epoch 1, network 1 has not
    killed = tmp_path / "killed"
    die = lambda: StopAt(1, rank=1, hook="on_epoch_end")  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        fit_population(lambda s: _graft_net(s, killed, methods=("graft", die), epochs=3), 2)
    epochs = [torch.load(killed / f"net{k}" / "checkpoint.pt", weights_only=True)["epoch"] for k in range(2)]
    assert epochs == [2, 1]  # out of step: network 0 must roll back to its previous checkpoint
    assert RunDir(killed).network(0).previous_checkpoint.exists()
    resumed = fit_population(lambda s: _graft_net(s, killed, methods=("graft", StopAt), epochs=3, resume=True), 2)
    for (a, _), (b, _) in zip(full, resumed):
        for k, v in a.model.state_dict().items():
            assert torch.equal(v, b.model.state_dict()[k]), k
    for k in range(2):
        lines = (killed / f"net{k}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2]


def test_population_surfaces_a_failing_network():
    class Boom(Method):
        name = "boom"

        def on_epoch_end(self, t):
            if t.rank == 1:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fit_population(lambda s: _graft_net(s, methods=("graft", Boom), epochs=2), 2, timeout=60)
    group = Lockstep(2, timeout=0.5)

    def skip(peers):
        if peers.rank == 0:
            peers.all_gather_scalars([1.0])

    with pytest.raises(PeerError):
        group.run([skip, skip])


def test_a_turn_longer_than_the_timeout_is_not_a_hang():
    # network 0 computes for 4x the timeout between collectives; network 1 must wait, not fail
    import time

    def slow(peers):
        got = peers.all_gather_scalars([float(peers.rank)])
        if peers.rank == 0:
            time.sleep(0.8)
        return got, peers.all_gather_scalars([10.0 + peers.rank])

    assert Lockstep(2, timeout=0.2).run([slow, slow]) == [([[0.0], [1.0]], [[10.0], [11.0]])] * 2


def test_a_population_without_exchanges_trains_past_the_timeout(tmp_path):
    # no method exchanges anything, so each network's whole run is one turn (the pop2 job of
    # benchmarks/accuracy_reactivation.py, `prunus train --networks 2`): the other waits for it
    def plain(strategy):
        return _graft_net(strategy, tmp_path, methods=(), epochs=2)

    results = fit_population(plain, 2, timeout=0.01)
    assert [t.epoch for t, _ in results] == [2, 2]
    assert [len(t.history) for t, _ in results] == [2, 2]


# ---------------------------------------------------------------------------- composition


def _masked_writers(model, sfp):
    out = []
    for g in sfp.groups:
        idxs = sfp.masks.get(g.key, [])
        if idxs:
            out.extend(w[idxs] for w in group_weights(model, g).writers)
    return out


@pytest.mark.parametrize("order", ["we,sfp", "sfp,we"])
def test_we_with_sfp_hooks_run_in_the_given_order(order):
    log = []
    sfp = create_method("sfp", rate=0.25, remove_at_end=False)
    we = create_method("we", ratio_conv=0.5, lam=1.0)
    methods = [we, sfp] if order == "we,sfp" else [sfp, we]
    t = Trainer(_model(0), _data(), _cfg(epochs=1), [*methods, Order(log)], progress=False)
    t.fit()
    first = "we_" if order == "we,sfp" else "sfp_"
    assert next(iter(log[0])).startswith(first)
    assert log[0]["we_filters"] > 0
    writers = _masked_writers(t.model, sfp)
    assert writers
    zero = all(float(w.abs().sum()) == 0.0 for w in writers)
    # SFP last: its masks hold; WE last: it revives the zeroed (weakest) filters by crossover
    assert zero == (order == "we,sfp")


def test_graft_with_csgd_in_a_population():
    def make(s):
        seed = network_seed(0, s.rank)
        methods = [create_method("graft"), create_method("csgd", width=0.5)]
        return Trainer(_model(seed), _data(seed), _cfg(seed, epochs=1), methods, progress=False, parallel=s)

    results = fit_population(make, 2)
    for t, final in results:
        assert "graft_alpha" in t.history[-1]
        assert any(k.startswith("csgd_") for k in t.history[-1])
        dense = sum(p.numel() for p in _model(0).parameters())
        assert sum(p.numel() for p in t.model.parameters()) < dense  # C-SGD merged at the end


def test_per_network_learning_rates_follow_the_paper_formula():
    def lr_of(peers):
        from prunus.engine.parallel import Independent

        t = Trainer(
            _model(0),
            _data(),
            _cfg(),
            [create_method("graft", per_network_lr=True)],
            progress=False,
            parallel=Independent(peers),
        )
        return t.optimizer.param_groups[0]["base_lr"]

    lrs = Lockstep(4).run([lr_of] * 4)
    expected = [0.05 * (1 + math.cos(math.pi * (4 - k) / 4)) / 2 for k in range(1, 5)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] == pytest.approx(0.05)


def test_per_network_learning_rates_survive_a_resume(tmp_path):
    """The factor is re-applied on resume (it used to be overwritten by the config's lr)."""
    from prunus.engine.parallel import Independent

    def run(epochs):
        def net(peers):
            t = Trainer(
                _model(peers.rank),
                _data(peers.rank),
                _cfg(peers.rank, epochs=epochs, checkpoint=True),
                [create_method("graft", per_network_lr=True)],
                tmp_path / f"net{peers.rank}",
                resume=True,
                progress=False,
                parallel=Independent(peers),
            )
            resumed_at = t.epoch
            lr = t.optimizer.param_groups[0]["base_lr"]
            t.fit()
            return resumed_at, lr

        return Lockstep(2).run([net] * 2)

    fresh = run(1)
    resumed = run(2)
    assert [epoch for epoch, _ in fresh] == [0, 0]
    assert [epoch for epoch, _ in resumed] == [1, 1]
    expected = [0.05 * (1 + math.cos(math.pi * (2 - k) / 2)) / 2 for k in (1, 2)]
    assert [lr for _, lr in fresh] == pytest.approx(expected)
    assert [lr for _, lr in resumed] == pytest.approx(expected)
    assert expected[0] != pytest.approx(expected[1])
