"""The Fisher bit order: the diagonal Fisher against its definition, the KL it predicts against the KL
measured, and the allocation it drives against the measured greedy (same budget, a fraction of the passes)."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

from prunus.compress import bits as bits_mod
from prunus.compress.config import FISHER_FROM_LAYERS, CompressConfig
from prunus.compress.fisher import fisher_diagonal
from prunus.errors import ConfigError

from .test_bits import _net


def _exact_fisher(net, names, x):
    """The definition, image by image: E_x sum_c p(c|x) * (d log p(c|x) / dw)^2."""
    weights = [net.get_submodule(n).weight for n in names]
    total = [torch.zeros_like(w) for w in weights]
    for row in x.split(1):
        logp = F.log_softmax(net(row), -1)[0]
        for c, p in enumerate(logp.detach().exp()):
            for t, g in zip(total, torch.autograd.grad(logp[c], weights, retain_graph=True)):
                t += p * g**2
    return {n: t / x.shape[0] for n, t in zip(names, total)}


def test_the_signed_sum_estimator_matches_the_fisher_by_its_definition():
    net, _, masks = _net(0)
    x = torch.randn(1024, 64, generator=torch.Generator().manual_seed(5))
    names = list(masks)
    estimate = fisher_diagonal(net, names, x, chunk=64)
    exact = _exact_fisher(net, names, x)
    for n in names:
        # the layer's total sets its costs against the other layers': within 10% (16 backward passes, not 10,240)
        assert float(estimate[n].sum()) == pytest.approx(float(exact[n].sum()), rel=0.1), n
    # within a layer, which rows are sensitive: the per-row totals of all layers agree
    rows = [torch.cat([f[n].sum(1) for n in names]) for f in (estimate, exact)]
    assert float(torch.corrcoef(torch.stack(rows))[0, 1]) > 0.9


def test_the_fisher_is_seeded_and_leaves_the_model_as_it_was():
    net, x, masks = _net(1)
    names = list(masks)
    net[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = fisher_diagonal(net, names, x[:256], seed=3)
    b = fisher_diagonal(net, names, x[:256], seed=3)
    assert all(torch.equal(a[n], b[n]) for n in names)
    assert not torch.equal(a["0"], fisher_diagonal(net, names, x[:256], seed=4)["0"])  # the seed is used
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net[0].weight.requires_grad
    assert net[2].weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("bits", [4, 5])
def test_the_predicted_kl_of_quantizing_one_layer_is_the_measured_kl_within_a_factor_of_three(bits):
    net, x, masks = _net(0)
    teacher = net(x).detach()
    trial = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1))
    fisher = fisher_diagonal(net, list(masks), x)
    for n in masks:
        q = bits_mod.best_quantizer(trial.original[n][masks[n]], bits, "kmeans")
        predicted = 0.5 * float((fisher[n] * (trial.weight(n, q) - trial.original[n]) ** 2).sum())
        measured, _ = trial.measure({n: q})
        assert 1 / 3 < predicted / measured < 3.0, (n, predicted, measured)  # diagonal: no cross terms


def test_each_step_is_the_cheapest_predicted_kl_per_bit_saved_and_every_layer_reaches_min_bits():
    net, x, masks = _net(0)  # layers of 3072, 1536, 768 and 240 weights: per bit saved differs from per step
    fisher = fisher_diagonal(net, list(masks), x)
    w = {n: net.get_submodule(n).weight.detach() for n in masks}

    def quantizer(n, b):
        return bits_mod.best_quantizer(w[n][masks[n]], b, "kmeans")

    def predicted_kl(n, b):  # the second-order KL of quantizing layer n to b bits
        q = quantizer(n, b)
        moved = bits_mod.dequantize(bits_mod.quantize(w[n][masks[n]], q), q) - w[n][masks[n]]
        return 0.5 * float((fisher[n][masks[n]] * moved**2).sum())

    steps = bits_mod.fisher_steps(fisher, w, masks, quantizer, 2, 8)
    bits = dict.fromkeys(masks, 8)
    for n in steps:
        cost = {m: max(predicted_kl(m, bits[m] - 1) - predicted_kl(m, bits[m]), 0.0) / int(masks[m].sum())
                for m in masks if bits[m] > 2}  # fmt: skip
        assert cost[n] == pytest.approx(min(cost.values()), rel=1e-9, abs=1e-15)
        bits[n] -= 1
    assert bits == dict.fromkeys(masks, 2)
    # a layer with no survivors takes no step; steps stop at min_bits
    empty = {**masks, "0": torch.zeros_like(masks["0"])}
    assert "0" not in bits_mod.fisher_steps(fisher, w, empty, quantizer, 5, 8)
    assert len(bits_mod.fisher_steps(fisher, w, empty, quantizer, 5, 8)) == 3 * (len(masks) - 1)


@pytest.mark.parametrize(("max_kl", "seed"), list(itertools.product((3e-6, 1e-5, 3e-5, 1e-4), range(4))))
def test_the_fisher_order_keeps_the_measured_budget_and_nearly_the_greedys_size_in_far_fewer_passes(
    max_kl, seed, monkeypatch
):
    net, x, masks = _net(seed)
    teacher = net(x).detach()
    calls = []
    measure_se = bits_mod._Trial.measure_se
    monkeypatch.setattr(bits_mod._Trial, "measure_se", lambda self, qs: calls.append(1) or measure_se(self, qs))
    fisher = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=max_kl, max_drop=None, order="fisher")
    fisher_passes = len(calls)
    measured = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=max_kl, max_drop=None)
    monkeypatch.undo()
    assert fisher_passes <= 16  # the default: twice the layers, at least 16
    assert fisher_passes < len(calls) - fisher_passes
    kl, _ = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1)).measure(fisher)
    assert kl <= max_kl

    def size(q):
        return sum(v.bits * int(masks[n].sum()) for n, v in q.items())

    assert size(fisher) < 8 * sum(int(m.sum()) for m in masks.values())  # it lowers bits
    assert size(fisher) <= 1.1 * size(measured)  # measured on these nets: at most 5% above the greedy


def test_the_fisher_order_keeps_the_drop_budget_at_its_confidence():
    net, x, masks = _net(0)
    teacher = net(x).detach()
    labels = teacher.argmax(1)
    z = bits_mod.z_score(0.95)
    chosen = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=2.0, z=z, order="fisher")
    _, drop, se = bits_mod._Trial(net, masks, x, teacher, labels).measure_se(chosen)
    assert drop + z * se <= 2.0
    assert sum(q.bits for q in chosen.values()) < 8 * len(masks)


def test_the_pass_limit_holds_and_what_it_returns_was_measured_within_budget(monkeypatch):
    net, x, masks = _net(2)
    teacher = net(x).detach()
    trial = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1))
    seen: list[tuple[dict[str, int], bool]] = []
    measure_se = bits_mod._Trial.measure_se

    def spy(self, qs):
        out = measure_se(self, qs)
        seen.append(({n: q.bits for n, q in qs.items()}, out[0] <= 1e-5))
        return out

    monkeypatch.setattr(bits_mod._Trial, "measure_se", spy)
    for passes in (1, 3, 5):
        seen.clear()
        chosen = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=1e-5, max_drop=None, order="fisher",
                                        max_passes=passes)  # fmt: skip
        assert len(seen) == passes
        assert ({n: q.bits for n, q in chosen.items()}, True) in seen  # returned only what it measured within
    monkeypatch.undo()
    assert trial.measure(chosen)[0] <= 1e-5


def test_a_budget_missed_at_max_bits_costs_one_pass_and_keeps_max_bits(monkeypatch):
    net, x, masks = _net(0)
    teacher = net(x).detach()
    calls = []
    measure_se = bits_mod._Trial.measure_se
    monkeypatch.setattr(bits_mod._Trial, "measure_se", lambda self, qs: calls.append(1) or measure_se(self, qs))
    chosen = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=0.0, max_drop=None, order="fisher")
    assert len(calls) == 1
    assert {q.bits for q in chosen.values()} == {8}


def test_a_loose_budget_takes_every_layer_to_min_bits():
    net, x, masks = _net(0)
    teacher = net(x).detach()
    chosen = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=None, max_drop=100.0, order="fisher",
                                    min_bits=3)  # fmt: skip
    assert {q.bits for q in chosen.values()} == {3}


def test_bit_order_is_checked_and_auto_picks_by_layer_count():
    with pytest.raises(ConfigError, match="bit_order"):
        CompressConfig(bit_order="fast")
    net, x, masks = _net(0)
    with pytest.raises(ValueError, match="order='fast'"):
        bits_mod.allocate_bits(net, masks, x, net(x).detach(), None, max_kl=1e-3, max_drop=None, order="fast")
    auto = CompressConfig()
    assert auto.bit_order_for(FISHER_FROM_LAYERS - 1) == "measured"
    assert auto.bit_order_for(FISHER_FROM_LAYERS) == "fisher"
    assert CompressConfig(bit_order="measured").bit_order_for(500) == "measured"
    assert CompressConfig(bit_order="fisher").bit_order_for(3) == "fisher"


@pytest.mark.parametrize(("bit_order", "from_layers", "expected"),
                         [("auto", FISHER_FROM_LAYERS, "measured"), ("auto", 3, "fisher"),
                          ("fisher", FISHER_FROM_LAYERS, "fisher"), ("measured", 3, "measured")])  # fmt: skip
def test_compress_allocates_in_the_order_the_config_names(bit_order, from_layers, expected, monkeypatch):
    """LeNet-300-100 has 3 quantized layers: 'auto' gives it the measured greedy, unless the threshold is 3."""
    import prunus

    api = importlib.import_module("prunus.compress.api")
    seen = []
    real = api.allocate_bits
    monkeypatch.setattr(api, "allocate_bits", lambda *a, **kw: seen.append(kw["order"]) or real(*a, **kw))
    monkeypatch.setattr(importlib.import_module("prunus.compress.config"), "FISHER_FROM_LAYERS", from_layers)
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, num_classes=10, width_mult=0.1).eval()
    x = torch.randn(64, 1, 28, 28)
    cfg = CompressConfig(calib_size=32, rescore_size=64, cycles=1, generations=1, population=3, elite=1,
                         sparsity=0.5, bits="auto", max_drop=100.0, verify_size=0, escalate=False,
                         bit_order=bit_order)  # fmt: skip
    report = prunus.compress(model, x, cfg)
    assert seen == [expected]
    assert {r.bits for r in report.layers} == {2}  # no budget to speak of: either order goes to min_bits


def test_a_wrong_prediction_costs_only_its_layer_the_step_over_budget_freezes_it(monkeypatch):
    """The budget is measured, the order only predicted: a layer the Fisher calls free (here: zeroed) comes
    first in the order and breaks the budget on the way down; it stops there and the others still go down."""
    net, x, masks = _net(0)
    teacher = net(x).detach()
    module = importlib.import_module("prunus.compress.fisher")
    real = module.fisher_diagonal

    def wrong_about_the_first_layer(*args, **kwargs):
        f = real(*args, **kwargs)
        return {**f, "0": torch.zeros_like(f["0"])}

    monkeypatch.setattr(module, "fisher_diagonal", wrong_about_the_first_layer)
    chosen = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=1e-5, max_drop=None, order="fisher")
    bits = {n: q.bits for n, q in chosen.items()}
    trial = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1))
    assert trial.measure(chosen)[0] <= 1e-5
    below = {**chosen, "0": bits_mod.best_quantizer(trial.original["0"][masks["0"]], bits["0"] - 1, "kmeans")}
    assert bits["0"] > 2
    assert trial.measure(below)[0] > 1e-5
    assert all(bits[n] < 8 for n in ("2", "4", "6"))  # ...and the layers after it in the order still went down


class _Oracle:
    """A stand-in `_Trial` for the descent's search alone: a state is within budget iff no layer is below
    its floor, so the exact answer is known (every layer at its floor) and every pass is counted."""

    def __init__(self, floors: dict[str, int]) -> None:
        self.floors, self.passes = floors, []
        self.masks = {n: torch.ones(4, dtype=torch.bool) for n in floors}
        self.model, self.x, self.original = None, None, {}

    def measure_se(self, quantizers):
        bits = {n: q.bits for n, q in quantizers.items()}
        good = all(bits[n] >= f for n, f in self.floors.items())
        self.passes.append((bits, good))
        return (0.0 if good else 1.0), 0.0, 0.0


def _floors_and_order(seed: int, layers: int = 20) -> tuple[dict[str, int], list[str]]:
    """Random floors, and an order shaped like a Fisher order: each layer's steps get dearer 4x per bit,
    layers' sensitivities spread over orders of magnitude, so breaks come in runs near the budget's edge."""
    gen = torch.Generator().manual_seed(seed)
    floors = {f"l{i}": int(b) for i, b in enumerate(torch.randint(2, 9, (layers,), generator=gen))}
    sens = dict(zip(floors, (torch.randn(layers, generator=gen) * 2).exp().tolist()))
    steps = sorted((sens[n] * 4.0 ** (8 - b), n) for n in floors for b in range(7, 1, -1))
    return floors, [n for _, n in steps]


@pytest.mark.parametrize("seed", range(3))
def test_the_search_after_a_freeze_finds_every_layers_floor_and_galloping_spends_fewer_passes(seed, monkeypatch):
    floors, order = _floors_and_order(seed)
    monkeypatch.setattr(importlib.import_module("prunus.compress.fisher"), "fisher_diagonal", lambda *a, **k: {})
    monkeypatch.setattr(bits_mod, "fisher_steps", lambda *a, **k: list(order))

    def q(name, b):
        return type("Q", (), {"bits": b})()

    def run(gallop, passes=10_000):
        oracle = _Oracle(floors)
        chosen = bits_mod._fisher_descent(oracle, q, lambda kl, drop, se: kl <= 0, 2, 8, passes, None, gallop=gallop)
        return {n: v.bits for n, v in chosen.items()}, oracle.passes

    (gallop_bits, gallop_passes), (bisect_bits, bisect_passes) = run(True), run(False)
    assert gallop_bits == floors  # each layer went down to its floor and stopped there
    assert bisect_bits == floors
    assert (gallop_bits, True) in gallop_passes  # what it returned was measured within budget
    # measured on seeds 0-9 of this generator: galloping needs 0.65x-0.84x the bisection's passes (median 0.75)
    assert len(gallop_passes) < 0.9 * len(bisect_passes)
    for limit in (4, 9, 40):  # any limit: at most that many passes, never a state measured over budget,
        limited, passes = run(True, limit)  # and at the default (2 x layers) closer to the floors than bisecting
        assert len(passes) <= limit
        assert (limited, True) in passes
    at_default = [sum(run(g, 40)[0].values()) - sum(floors.values()) for g in (True, False)]
    assert at_default[0] < at_default[1]


def test_after_a_freeze_a_long_run_of_good_steps_costs_logarithmically_many_passes(monkeypatch):
    """The cheapest layer stops at 7 bits; the 19 others go to 2 bits: after its freeze the rest of the
    order (about 114 steps) is all within budget, which the gallop crosses in doubling strides."""
    floors = {"x": 7, **{f"l{i}": 2 for i in range(19)}}
    order = ["x"] * 6 + [n for b in range(6) for n in floors if n != "x"]
    monkeypatch.setattr(importlib.import_module("prunus.compress.fisher"), "fisher_diagonal", lambda *a, **k: {})
    monkeypatch.setattr(bits_mod, "fisher_steps", lambda *a, **k: list(order))
    oracle = _Oracle(floors)
    q = lambda name, b: type("Q", (), {"bits": b})()  # noqa: E731
    chosen = bits_mod._fisher_descent(oracle, q, lambda kl, drop, se: kl <= 0, 2, 8, 10_000, None)
    assert {n: v.bits for n, v in chosen.items()} == floors
    assert len(oracle.passes) <= 20  # 1 + the first bisection (8) + the gallop (7 strides) + a few; one a step: 100+
