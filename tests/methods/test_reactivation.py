"""WE and grafting as Trainer plug-ins: logs, untouched state, in-process populations, resume, composition."""

from __future__ import annotations

import json
import math

import numpy as np
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


class Snap(Method):
    """At the start of epoch `epoch`, keeps the model state and the optimizer state as this hook sees them."""

    name = "snap"

    def __init__(self, epoch=1):
        self.epoch, self.state, self.opt = epoch, None, None

    def on_epoch_start(self, t):
        if t.epoch == self.epoch:
            self.state = {k: v.clone() for k, v in t.model.state_dict().items()}
            self.opt = {id(p): {k: v.clone() for k, v in s.items()} for p, s in t.optimizer.state.items()}


def test_we_logs_counts_and_leaves_linear_bias_stats_and_optimizer_alone():
    model = _model(0)
    before, after = Snap(), Snap()  # around WE's evolution at the start of epoch 1
    we = create_method("we", ratio_conv=0.3, lam=1.0)
    trainer = Trainer(model, _data(), _cfg(epochs=2), methods=[before, we, after], progress=False)
    trainer.fit()
    assert "we_filters" not in trainer.history[0]  # nothing evolves before the first epoch
    rec = trainer.history[1]
    assert rec["we_filters"] > 0
    assert rec["we_slices"] >= rec["we_filters"]
    assert rec["we_ratio_conv"] == pytest.approx(0.3 * 0.5)  # epoch 0's ratio, one phase: sigmoid(0) = 1/2
    for k, v in before.state.items():
        if k.startswith("fc.") or "running_" in k or "num_batches" in k:
            assert torch.equal(v, after.state[k]), k
    assert any(not torch.equal(before.state[k], after.state[k]) for k in after.state if k.endswith("conv1.weight"))
    for p, s in before.opt.items():
        for k, v in s.items():
            assert torch.equal(after.opt[p][k], v), k


def test_we_reset_momentum_zeroes_exactly_the_evolved_rows():
    model = _model(0)
    we = create_method("we", ratio_conv=0.3, lam=1.0, reset_momentum=True)
    seen = {}

    class Rows(Method):  # right after WE: which rows changed, which momentum rows are zero
        name = "rows"

        def on_epoch_start(self, t):
            if t.epoch != 1:
                return
            for m in t.model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    old = before.state[f"{names[m]}.weight"]
                    changed = (m.weight.detach() != old).flatten(1).any(1)
                    zero = t.optimizer.state[m.weight]["momentum_buffer"].flatten(1).abs().sum(1) == 0
                    seen[names[m]] = (changed, zero)

    names = {m: n for n, m in model.named_modules()}
    before = Snap()
    trainer = Trainer(model, _data(), _cfg(epochs=2), methods=[before, we, Rows()], progress=False)
    trainer.fit()
    assert sum(int(c.sum()) for c, _ in seen.values()) > 0
    for name, (changed, zero) in seen.items():
        assert torch.equal(changed, zero), name  # momentum cleared on exactly the evolved filters


def test_we_evaluates_each_epoch_before_its_evolution_and_leaves_the_last_epoch_alone():
    """The reference's order (train -> test -> evolve): WE's records and final model are pre-evolution."""
    plain1 = Trainer(_model(0), _data(), _cfg(epochs=1), progress=False)
    plain1.fit()
    we1 = Trainer(_model(0), _data(), _cfg(epochs=1), [create_method("we", ratio_conv=0.3, lam=1.0)], progress=False)
    we1.fit()
    for k, v in plain1.model.state_dict().items():
        assert torch.equal(v, we1.model.state_dict()[k]), k  # no evolution after the last epoch
    plain2 = Trainer(_model(0), _data(), _cfg(epochs=2), progress=False)
    plain2.fit()
    we2 = Trainer(_model(0), _data(), _cfg(epochs=2), [create_method("we", ratio_conv=0.3, lam=1.0)], progress=False)
    we2.fit()
    assert we2.history[0]["test_acc"] == plain2.history[0]["test_acc"]  # epoch 0 scored before its evolution
    assert we2.history[0]["test_loss"] == plain2.history[0]["test_loss"]
    assert we2.history[1]["test_loss"] != plain2.history[1]["test_loss"]  # then epoch 1 trained the evolved model


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


def _entropy(w: torch.Tensor, binning: str) -> float:
    """The spec's layer information, computed here with numpy: 10 equal-width bins, natural log."""
    x = w.detach().double().flatten().numpy()
    lo, hi = x.min(), x.max()
    if binning == "closed":
        counts, _ = np.histogram(x, bins=10, range=(lo, hi))
    else:  # the reference's [lo + i s, lo + (i + 1) s) bins in float32: the maximum is in none
        x32 = w.detach().float().flatten()
        mn, scale = x32.min(), (x32.max() - x32.min()) / 10
        counts = [int(((x32 >= mn + i * scale) & (x32 < mn + (i + 1) * scale)).sum()) for i in range(10)]
    p = np.asarray(counts, dtype=float) / x.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize(("n", "binning"), [(2, "closed"), (3, "closed"), (3, "half-open")])
def test_ring_graft_blends_with_the_neighbours_pre_graft_weights_by_the_entropy_rule(n, binning):
    """Every network k: W <- alpha W_k + (1 - alpha) W_{k-1}, alpha = 0.5 + (0.4 / pi) atan(500 (H_k - H_{k-1})),
    H computed here from the pre-graft weights, for the conv, its BN (stats too) and the classifier."""
    pre, post = {}, {}

    class Keep(Method):
        name = "keep"

        def __init__(self, store):
            self.store = store

        def on_epoch_start(self, t):
            if t.epoch == 1:
                self.store[t.rank] = {k: v.clone() for k, v in t.model.state_dict().items()}

    graft = lambda: create_method("graft", binning=binning)  # noqa: E731
    results = fit_population(lambda s: _graft_net(s, methods=(lambda: Keep(pre), graft, lambda: Keep(post))), n)
    for k, (t, _) in enumerate(results):
        mine, theirs = pre[k], pre[(k - 1) % n]
        units = [("conv1", ("conv1.weight", "bn1.weight", "bn1.running_mean")), ("layer3.2.conv2", ("fc.weight",))]
        for conv, keys in units:
            h_own, h_other = _entropy(mine[f"{conv}.weight"], binning), _entropy(theirs[f"{conv}.weight"], binning)
            alpha = 0.5 + 0.4 / math.pi * math.atan(500 * (h_own - h_other))
            for key in keys:
                expected = alpha * mine[key] + (1 - alpha) * theirs[key]
                torch.testing.assert_close(post[k][key], expected, rtol=1e-5, atol=1e-5, msg=f"net {k}: {key}")
        assert 0.3 < alpha < 0.7
    if n == 2:  # alpha_1 = 1 - alpha_0: both networks leave the graft bit-identical
        for key, v in post[0].items():
            if "num_batches" not in key:
                assert torch.equal(v, post[1][key]), key


def test_graft_scores_the_networks_before_their_graft_and_leaves_the_last_epoch_alone():
    """The reference's order (train -> test -> save -> graft): records, checkpoints and the final
    networks are pre-graft, so two grafted networks end different, like the plain pair."""
    plain = fit_population(lambda s: _graft_net(s, methods=(), epochs=1), 2)
    grafted = fit_population(lambda s: _graft_net(s, methods=("graft",), epochs=1), 2)
    for (a, _), (b, _) in zip(plain, grafted):
        for k, v in a.model.state_dict().items():
            assert torch.equal(v, b.model.state_dict()[k]), k  # no graft after the last epoch
    plain = fit_population(lambda s: _graft_net(s, methods=(), epochs=2), 2)
    grafted = fit_population(lambda s: _graft_net(s, methods=("graft",), epochs=2), 2)
    for (a, _), (b, _) in zip(plain, grafted):
        assert a.history[0]["test_loss"] == b.history[0]["test_loss"]  # epoch 0 scored before the graft
        assert a.history[1]["test_loss"] != b.history[1]["test_loss"]  # epoch 1 trained from the grafted weights
    (g0, _), (g1, _) = grafted
    assert not torch.equal(g0.model.conv1.weight, g1.model.conv1.weight)  # scored before the next graft: different
    assert g0.history[1]["test_loss"] != g1.history[1]["test_loss"]


def test_ring_graft_without_peers_and_mismatched_networks_raise():
    with pytest.raises(ConfigError, match="at least 2 networks"):
        Trainer(_model(0), _data(), _cfg(), [create_method("graft")], progress=False)

    def make(s):
        model = create_model("resnet20" if s.rank == 0 else "lenet5", num_classes=10, in_channels=1, width_mult=0.25)
        return Trainer(model, _data(), _cfg(), [create_method("graft")], progress=False, parallel=s)

    with pytest.raises(ConfigError, match="layers differ"):
        fit_population(make, 2)


def _weak_trainer(variant, epoch, **kw):
    """A fake trainer (the TrainerView a hook reads) on a net with weak filters, at `epoch`."""
    import types

    from .test_reactivation_cores import _weak_net

    net = _weak_net()
    cfg = _cfg(seed=3)
    data = types.SimpleNamespace(input_shape=(1, 6, 6))
    t = types.SimpleNamespace(model=net, config=cfg, epoch=epoch, rank=0, data=data, device=torch.device("cpu"),
                              peers=None, log_metrics=lambda m: None)  # fmt: skip
    method = create_method("graft", variant=variant, **kw)
    method.setup(t)
    return t, method


def test_noise_variant_adds_decayed_seeded_noise_to_the_weak_filters_only():
    from prunus.data._seed import generator

    for epoch in (1, 4):
        t, method = _weak_trainer("noise", epoch, threshold=0.1, noise_decay=0.5)
        convs = [m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d)]
        before = [m.weight.detach().clone() for m in convs]
        method.on_epoch_start(t)
        gen = generator("graft-noise", 3, 0, epoch - 1)  # the graft after epoch e draws (seed, rank, e)
        for m, w in zip(convs, before):
            weak = w.abs().flatten(1).sum(1) < 0.1
            expected = w.clone()
            if weak.any():
                expected[weak] += 0.5 ** (epoch - 1) * torch.randn((int(weak.sum()), *w.shape[1:]), generator=gen)
            torch.testing.assert_close(m.weight.detach(), expected, rtol=0, atol=1e-7)
        assert any(bool((w.abs().flatten(1).sum(1) < 0.1).any()) for w in before)


def test_internal_variant_adds_the_strong_filters_to_the_weak_ones():
    t, method = _weak_trainer("internal", 2, threshold=0.5)
    convs = [m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d)]
    before = [m.weight.detach().clone() for m in convs]
    method.on_epoch_start(t)
    grew = 0
    for m, w in zip(convs, before):
        l1 = w.abs().flatten(1).sum(1).tolist()
        order = sorted(range(len(l1)), key=lambda i: l1[i])  # weakest first
        n = min(sum(v < 0.5 for v in l1), len(l1) // 2)
        expected = w.clone()
        for j in range(n):  # the j-th weakest receives (+=) the j-th strongest
            expected[order[j]] = w[order[j]] + w[order[-1 - j]]
        torch.testing.assert_close(m.weight.detach(), expected, rtol=0, atol=0)
        grew += n
        assert all(float(w[order[j]].abs().sum()) > 0 for j in range(n))  # a copy would differ from the sum
    assert grew >= 4


def test_single_network_variants_do_nothing_before_the_first_epoch():
    for variant in ("noise", "internal"):
        t, method = _weak_trainer(variant, 0, threshold=1.0)
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        method.on_epoch_start(t)
        for k, v in t.model.state_dict().items():
            assert torch.equal(v, before[k]), (variant, k)


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
    t = Trainer(_model(0), _data(), _cfg(epochs=2), [*methods, Order(log)], progress=False)
    t.fit()
    assert log[1]["we_filters"] > 0  # WE evolved at the start of epoch 1, before SFP's masks of epoch 1
    writers = _masked_writers(t.model, sfp)
    assert writers
    # SFP zeroes its masks at the end of every epoch, after WE's evolution at the start: they hold
    assert all(float(w.abs().sum()) == 0.0 for w in writers)


def test_graft_with_csgd_in_a_population():
    def make(s):
        seed = network_seed(0, s.rank)
        methods = [create_method("graft"), create_method("csgd", width=0.5)]
        return Trainer(_model(seed), _data(seed), _cfg(seed, epochs=2), methods, progress=False, parallel=s)

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
