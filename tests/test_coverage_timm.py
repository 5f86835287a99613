"""benchmarks/coverage_timm.py (timm family coverage, prunus vs Torch-Pruning) and its README table.

The benchmark itself runs for tens of minutes; here: one arm end to end on one small timm model
(every step passes and the MACs are within 5% below the request), a worker past its timeout killed
and recorded as failed, the summary's counts and median time ratio, and the rendered table naming
every failure with its reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _module(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_cov_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _arm(ok: bool, prune_s: float, reason: str = "ValueError: boom", failed: str = "onnx") -> dict:
    steps = ("prune", "forward", "train", "save_load", "onnx", "macs")
    record = {k: {"ok": True} for k in steps}
    if not ok:
        for k in failed.split(","):
            record[k] = {"ok": False, "reason": reason}
        if failed == "prune":  # what the worker writes: every later step skipped
            for k in steps[1:]:
                record[k] = {"ok": False, "reason": "skipped: prune failed"}
    record.update({"pass": ok, "prune_s": prune_s, "macs_kept": 0.49})
    return record


def _run() -> dict:
    plan = {
        "timm": "1.0.31",
        "families": [
            {"family": f"fam{i}", "model": f"m{i}", "kwargs": {}, "params": 10, "conv_share": 0.9} for i in range(4)
        ],  # fmt: skip
        "excluded": [
            {"family": "vit/vit", "model": "vit_tiny", "conv_share": 0.01, "reason": "not a CNN"},
            {"family": "x/y", "reason": "no architecture runs at 64x64 (y1: TypeError: a | b)"},
        ],
    }
    models = {
        "m0": {"family": "fam0", "prunus": _arm(True, 1.0), "torch_pruning": _arm(True, 2.0)},  # ratio 0.5
        "m1": {"family": "fam1", "prunus": _arm(True, 3.0),
               "torch_pruning": _arm(False, 1.0, "RuntimeError: a | b", "forward,train")},  # ratio 3.0
        "m2": {"family": "fam2", "prunus": _arm(False, 0.1, "l3.conv (Conv2d) has 0 channels", "prune"),
               "torch_pruning": _arm(True, 4.0)},  # no ratio: prunus's prune failed (though it took 0.1 s)
        "m3": {"family": "fam3", "prunus": _arm(True, 25.0), "torch_pruning": _arm(True, 10.0)},  # ratio 2.5
    }  # fmt: skip
    return {"plan": plan, "models": models}


def test_summary_counts_passes_and_takes_the_median_time_ratio_over_models_both_pruned(monkeypatch):
    cov = _module("coverage_timm", monkeypatch)
    s = cov.summarise(_run())
    assert s["models"] == 4
    assert (s["prunus"]["pass"], s["torch_pruning"]["pass"]) == (3, 3)
    assert s["prunus"]["steps"]["prune"] == 3
    assert s["torch_pruning"]["steps"]["forward"] == 3
    assert (s["only_prunus"], s["only_torch_pruning"]) == (["m1"], ["m2"])
    assert s["time_ratio_models"] == 3
    assert s["median_time_ratio"] == pytest.approx(2.5)  # median of 0.5, 3.0, 2.5
    assert s["prunus_over_20s"] == ["m3"]


def test_the_table_gives_both_pass_rates_the_time_ratio_and_every_failure(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    render = _module("render_results", monkeypatch).render
    run = _run()
    run.update(definition="d", command="c", timm="1.0.31", torch_pruning="1.6.0", machine="x86_64, 2 cores",
               load_average=1.0, prunus="0.1.0", commit="abc")  # fmt: skip
    (tmp_path / "coverage_timm.json").write_text(json.dumps(run))
    text = render(tmp_path)
    assert "**prunus passes 3 of 4 (75%), Torch-Pruning 3 of 4 (75%)**" in text
    assert "the repeated side-by-side measurement below is the figure): 2.50 over the 3 models both pruned" in text
    assert "| prunus | 3/4 | 3 | 3 | 3 | 3 | 3 | 3 |" in text  # per step: m2's skipped steps count as failed
    assert "| Torch-Pruning | 3/4 | 4 | 3 | 3 | 4 | 4 | 4 |" in text
    assert "| fam1 | m1 | pass | 3.00 | forward, train: RuntimeError: a \\| b | 1.00 |" in text
    assert "| fam2 | m2 | prune: l3.conv (Conv2d) has 0 channels | 0.10 | pass | 4.00 |" in text
    assert "skipped" not in text
    assert "| fam0 | m0 |" not in text  # passed by both: listed in one line, not as a failure
    assert "Passed by both (2): m0, m3." in text
    assert "prunus prunes over 20 s: m3. On prune + forward + train alone" in text
    assert "first survey): prunus 3, Torch-Pruning 3." in text
    assert "convolutions), 1: vit/vit (1%)." in text
    assert "runs at 64x64, 1: x/y (no architecture runs at 64x64 (y1: TypeError: a \\| b))." in text


def test_a_hanging_worker_is_killed_and_recorded_as_failed(monkeypatch):
    cov = _module("coverage_timm", monkeypatch)
    record = cov._spawn("prunus", "vgg11", {}, timeout=1.0)  # 129M parameters: building and pruning take longer
    assert record["pass"] is False
    assert record["prune"] == {"ok": False, "reason": "timeout: no result within 1 s"}
    assert set(record) >= set(cov.STEPS)


def test_family_keys_group_sizes_and_keep_variants_apart(monkeypatch):
    cov = _module("coverage_timm", monkeypatch)
    same = [
        ("resnet18", "resnet50d"),
        ("mixnet_s", "mixnet_xl"),
        ("mobilenetv3_small_050", "mobilenetv3_large_100"),
        ("efficientnet_b0", "efficientnet_b3"),
        ("regnetx_002", "regnetx_160"),
        ("dla46x_c", "dla102x2"),
    ]
    apart = [("resnet18", "ecaresnet26t"), ("resnet18", "seresnext26d_32x4d"), ("efficientnet_b0", "tf_efficientnet_b0"),
             ("mobilenetv3_small_050", "mobilenetv4_conv_small"), ("resnet18", "nf_resnet26"), ("nfnet_f0", "dm_nfnet_f0")]  # fmt: skip
    for a, b in same:
        assert cov.family_key(a) == cov.family_key(b), (a, b)
    for a, b in apart:
        assert cov.family_key(a) != cov.family_key(b), (a, b)


def test_one_arm_runs_every_step_on_a_small_timm_model(monkeypatch):
    pytest.importorskip("timm")
    cov = _module("coverage_timm", monkeypatch)
    record = cov._run_arm("prunus", "resnet18", {"channels": [16, 32, 64, 128], "stem_width": 16})
    assert {k: record[k] for k in cov.STEPS} == {k: {"ok": True} for k in cov.STEPS}
    assert record["pass"] is True
    assert 0.475 <= record["macs_kept"] <= 0.5
    assert record["prune_s"] > 0


def test_a_budget_out_of_reach_passes_only_with_the_warning_and_its_share_recounted(monkeypatch):
    """resnet18 with an 8-channel stem tied to layer1: half the MACs are out of reach, and prunus says so."""
    pytest.importorskip("timm")
    cov = _module("coverage_timm", monkeypatch)
    record = cov._run_arm("prunus", "resnet18", {"channels": [8, 16, 32, 64], "stem_width": 8})
    assert record["pass"] is True
    assert record["macs_kept"] > 0.5
    said = re.search(r"keep_macs=0.5 cannot be reached: .* keeps ([0-9.]+) of the MACs", record["budget_out_of_reach"])
    assert said is not None
    assert abs(float(said.group(1)) - record["macs_kept"]) < 5e-4
    # the same model without the warning (as if prunus had missed the budget silently) fails the macs step
    import prunus.pruning.oneshot as oneshot

    monkeypatch.setattr(oneshot, "_warn_unreachable", lambda *args, **kwargs: None)
    record = cov._run_arm("prunus", "resnet18", {"channels": [8, 16, 32, 64], "stem_width": 8})
    assert record["pass"] is False
    assert record["macs"] == {"ok": False, "reason": f"kept {record['macs_kept']:.3f} of the MACs, requested 0.5"}


def test_a_failing_step_is_recorded_with_its_reason_not_a_harness_error(monkeypatch):
    pytest.importorskip("timm")
    import prunus

    cov = _module("coverage_timm", monkeypatch)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(prunus, "save", disk_full)  # a real failure of one step, the others unaffected
    record = cov._run_arm("prunus", "resnet18", {"channels": [16, 32, 64, 128], "stem_width": 16})
    assert record["pass"] is False
    failed = {k: record[k]["reason"] for k in cov.STEPS if not record[k]["ok"]}
    assert failed == {"save_load": "OSError: No space left on device"}


def test_the_trained_like_sweep_changes_only_constant_tensors_and_reports_a_zero_width_cut(monkeypatch):
    pytest.importorskip("timm")
    import torch

    sweep = _module("sweep_timm_trained_like", monkeypatch)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    weight = net[0].weight.detach().clone()
    assert sweep.trained_like_(net) == 4  # BN weight (ones), bias, running mean (zeros), running var (ones)
    assert torch.equal(net[0].weight, weight)  # not constant: untouched
    for t in (net[1].weight, net[1].bias, net[1].running_mean, net[1].running_var):
        assert len(set(t.tolist())) == 4
    assert float(net[1].bias.min()) >= 0.0
    assert float(net[1].bias.max()) <= 0.1  # mild: values stay near their own
    record = sweep.one("resnet18", {"channels": [16, 32, 64, 128], "stem_width": 16}, 0.5)
    assert record["ok"] is True
    assert 0.475 <= record["macs_kept"] <= 0.5
    import prunus

    def empties(model, *args, **kwargs):  # a prune that leaves a conv with 0 output channels
        model.fc.in_features = 0
        return model, None

    monkeypatch.setattr(prunus, "prune", empties)
    record = sweep.one("resnet18", {"channels": [16, 32, 64, 128], "stem_width": 16}, 0.5)
    assert record["ok"] is False
    assert record["reason"] == "fc (Linear) has 0 channels"
