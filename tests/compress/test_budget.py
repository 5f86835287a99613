"""The auto-bits budget is checked on the compressed model and a miss is reported, never silent."""

import importlib
import warnings

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.compress import CompressConfig, compress
from prunus.errors import BudgetNotMetWarning

FAST = {"calib_size": 32, "rescore_size": 64, "cycles": 1, "generations": 1, "population": 3, "elite": 1}


def _model_and_images():
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, num_classes=10, width_mult=0.1).eval()
    return model, torch.randn(64, 1, 28, 28)


def _compress_without_budget_warning(**config):
    """Compress the small model with `config`; a BudgetNotMetWarning fails the test."""
    model, x = _model_and_images()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetNotMetWarning)
        return compress(model, x, CompressConfig(**FAST, **config), baselines=False)


def _agreement(a, b):
    return 100 * float((a.argmax(1) == b.argmax(1)).float().mean())


def test_a_budget_the_pruning_alone_breaks_is_reported_with_the_measured_drop():
    model, x = _model_and_images()
    cfg = CompressConfig(
        **FAST, sparsity=0.97, bits="auto", max_drop=0.0, escalate=False
    )  # tests/compress/test_escalate.py
    with pytest.warns(
        BudgetNotMetWarning, match=r"budget not met: .* over max_drop 0.*Next to try: finetune_steps=300"
    ):
        report = compress(model, x, cfg, baselines=False)
    b = report.budget
    assert b["met"] is False
    assert b["against"] == "input"
    # 64 images for a 64-image budget batch and a 2048-image verdict: the budget batch shrinks to half,
    # x[:32], and the verdict is read on x[32:]
    assert b["images"] == 32
    with torch.no_grad():
        teacher, compressed = model(x[32:]), report.model(x[32:])
    # no labels: accuracy is agreement with the input model's top-1, as in the bit allocation
    assert b["drop_pt"] == pytest.approx(100 - _agreement(compressed, teacher))
    assert b["drop_pt"] > 0
    # its standard error, per image (paired): p = share of images where the two disagree; se = sqrt(p(1-p)/(n-1))
    p = 1 - _agreement(compressed, teacher) / 100
    assert b["drop_se_pt"] == pytest.approx(100 * (p * (1 - p) / 31) ** 0.5)
    assert b["pruned_drop_pt"] > 0
    # the greedy never lowered a bit: over budget from the start
    assert {r.bits for r in report.layers} == {cfg.max_bits}


def test_a_met_budget_says_so_without_a_warning():
    report = _compress_without_budget_warning(sparsity=0.3, bits="auto", max_drop=100.0)
    assert report.budget["met"] is True
    assert report.budget["max_drop"] == 100.0
    assert report.to_json()["budget"] == report.budget


def test_quantization_share_alone_is_the_verdict_only_without_a_teacher_budget():
    report = _compress_without_budget_warning(sparsity=0.97, bits="auto", quant_drop=2.0, max_drop=None)
    b = report.budget
    assert b["pruned_drop_pt"] > 2.0  # the pruning's own loss would break this budget...
    assert b["against"] == "pruned"
    assert b["max_drop"] == 2.0
    assert b["drop_pt"] <= 2.0  # ...but only quantization's share counts against it
    assert b["drop_pt"] == b["quant_drop_pt"]
    assert b["met"] is True


def test_quant_drop_aims_the_bits_but_the_verdict_keeps_the_teacher_budget():
    # max_drop keeps its default (1 pt): a run can spend only 2 pt on quantization and still lose more than
    # the budget asked; the verdict must say so, not "met" on quantization's share
    model, x = _model_and_images()
    cfg = CompressConfig(**FAST, sparsity=0.97, bits="auto", quant_drop=2.0, escalate=False)
    with pytest.warns(BudgetNotMetWarning, match=r"against the input model .* over max_drop 1"):
        report = compress(model, x, cfg, baselines=False)
    b = report.budget
    assert b["against"] == "input"
    assert (b["max_drop"], b["quant_drop"]) == (1.0, 2.0)
    with torch.no_grad():
        teacher, compressed = model(x[32:]), report.model(x[32:])
    assert b["drop_pt"] == pytest.approx(100 - _agreement(compressed, teacher))  # vs the input model, by hand
    assert b["drop_pt"] > 1.0
    assert b["met"] is False
    assert b["quant_drop_pt"] is not None
    assert b["quant_drop_pt"] != b["drop_pt"]  # the share vs the pruned model is reported beside it


def test_fixed_bits_have_no_budget():
    model, x = _model_and_images()
    report = compress(model, x, CompressConfig(**FAST, sparsity=0.5, bits=6), baselines=False)
    assert report.budget is None


def test_cli_prints_the_budget_verdict(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    d = tmp_path / "model"
    prunus.save(prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1), d, input_shape=(1, 28, 28))
    args = ["compress", str(d), "--data", "synthetic", "--sparsity", "0.97", "--bits", "auto", "--max-drop", "0",
            "--calib", "64", "--search-batch", "32", "--set", "cycles=1", "--set", "generations=1", "--set", "max_kl=0",
            "--no-progress", "--no-escalate",
            "--out", str(tmp_path / "m.prn")]  # fmt: skip
    with pytest.warns(BudgetNotMetWarning):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "NOT MET" in out
    assert "on validation images" in out  # synthetic data holds a validation split: the budget is measured there


def test_the_budget_verdict_states_its_standard_error_and_says_when_it_is_optimistic():
    from prunus.cli.compress_cmd import _budget_text

    budget = {"max_drop": 1.0, "max_kl": None, "met": True, "drop_pt": 0.93, "drop_se_pt": 0.29, "kl": 0.03,
              "against": "input", "pruned_drop_pt": 0.9, "images": 4096, "held_out": True}  # fmt: skip
    text = _budget_text(budget)
    assert "+0.93 pt lost (s.e. 0.29 on 4096 images)" in text
    assert "optimistic" not in text
    assert "the fine-tunes trained on these images: optimistic" in _budget_text({**budget, "held_out": False})
    bounded = _budget_text({**budget, "confidence": 0.95, "drop_upper_pt": 0.93 + 1.645 * 0.29})
    assert "(s.e. 0.29 on 4096 images; at most +1.41 pt at 95% confidence)" in bounded
    assert "not at 95% confidence" not in bounded  # no met_at_confidence: a verdict on the bound itself
    fresh = {**budget, "confidence": 0.95, "drop_upper_pt": 1.41, "independent": True}
    assert _budget_text({**fresh, "met_at_confidence": False}).startswith(
        "met (on the measured drop; not at 95% confidence): +0.93 pt lost (s.e. 0.29 on 4096 images nothing was "
        "chosen on; at most +1.41 pt at 95% confidence)"
    )
    assert _budget_text({**fresh, "met_at_confidence": True}).startswith("met: +0.93 pt lost")


def _spy_on_finetunes(monkeypatch):
    """Record the images each fine-tune trains on (the real fine-tunes still run)."""
    api = importlib.import_module("prunus.compress.api")

    seen = {}
    real_distill, real_codebooks = api.distill, api.finetune_codebooks

    def distill(student, teacher, x, *args, **kwargs):
        seen["distill"] = x.clone()
        return real_distill(student, teacher, x, *args, **kwargs)

    def finetune_codebooks(student, teacher, x, *args, **kwargs):
        seen["codebooks"] = x.clone()
        return real_codebooks(student, teacher, x, *args, **kwargs)

    monkeypatch.setattr(api, "distill", distill)
    monkeypatch.setattr(api, "finetune_codebooks", finetune_codebooks)
    return seen


def test_the_fine_tunes_never_train_on_the_budget_batch(monkeypatch):
    seen = _spy_on_finetunes(monkeypatch)
    model, _ = _model_and_images()
    x = torch.randn(64 + 16 + 48, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cfg = CompressConfig(**FAST, sparsity=0.5, bits="auto", max_drop=100.0, finetune_steps=3, codebook_steps=2,
                         finetune_size=40, verify_size=16)  # fmt: skip
    report = compress(model, x, cfg, baselines=False)
    # the budget batch is x[:64] (rescore_size), the verdict's x[64:80] (verify_size); the fine-tunes get the next
    # finetune_size=40, nothing else
    assert torch.equal(seen["distill"], x[80:120])
    assert torch.equal(seen["codebooks"], x[80:120])
    assert report.budget["images"] == 16
    assert report.budget["held_out"] is True
    assert report.budget["source"] == "calib"
    # without images beyond the budget batch (or finetune_size=0) they train on it, and the verdict says so
    for calib, size in ((x[:64], 40), (x, 0)):
        seen.clear()
        report = compress(model, calib, CompressConfig(**{**cfg.to_json(), "finetune_size": size}), baselines=False)
        assert torch.equal(seen["distill"], calib)
        assert report.budget["held_out"] is False
    # the search's recovery alone trains on them too: the verdict is optimistic then as well
    recovering = CompressConfig(**{**cfg.to_json(), "finetune_steps": 0, "codebook_steps": 0, "recovery_steps": 2,
                                   "cycles": 2, "finetune_size": 0})  # fmt: skip
    seen.clear()
    report = compress(model, x, recovering, baselines=False)
    assert torch.equal(seen["distill"], x)  # the recovery's distill, on every calibration image
    assert report.budget["held_out"] is False


def test_with_a_holdout_the_budget_is_measured_there_and_the_fine_tunes_use_all_calibration_images(monkeypatch):
    seen = _spy_on_finetunes(monkeypatch)
    model, x = _model_and_images()
    holdout = torch.randn(80, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    cfg = CompressConfig(**FAST, sparsity=0.5, bits="auto", max_drop=100.0, finetune_steps=3, codebook_steps=2,
                         verify_size=16)  # fmt: skip
    report = compress(model, x, cfg, baselines=False, holdout=holdout)
    assert torch.equal(seen["distill"], x)
    assert torch.equal(seen["codebooks"], x)
    assert report.budget["source"] == "holdout"
    assert report.budget["held_out"] is True
    assert report.budget["images"] == 16  # the verdict: the verify_size after rescore_size of the 80 holdout images
    # the reported accuracy is the verdict's: agreement of the compressed model with the teacher on holdout[64:80]
    with torch.no_grad():
        agree = _agreement(report.model(holdout[64:80]), model(holdout[64:80]))
    assert report.acc * 100 == pytest.approx(agree)


def test_the_compress_command_draws_the_budget_batch_from_the_validation_split(monkeypatch):
    import sys

    from prunus.compress.config import CompressConfig as Config
    from prunus.data import DataConfig, build_loaders, training_slice
    from prunus.pipeline._compress_stage import CompressStage, compress_model

    drawn = {}

    class Drawn(Exception):
        pass

    def record(model, calib, settings, *, holdout=None, **kwargs):
        drawn["calib"], drawn["holdout"] = calib, holdout
        raise Drawn  # stop before the search: only the draw is under test

    monkeypatch.setattr(sys.modules["prunus.compress"], "compress", record)
    model, _ = _model_and_images()
    settings = Config(calib_size=32, rescore_size=96, finetune_size=160)
    with pytest.raises(Drawn):  # the default data: 5000 validation images held out of the training split
        compress_model(CompressStage(compress=settings), model, "unused.prn", seed=0, progress=False)
    assert drawn["holdout"][0].shape[0] == 96 + 2048  # the budget batch and the verdict's (verify_size)
    assert drawn["calib"][0].shape[0] == 160
    bundle = build_loaders(DataConfig(augment=False), seed=0)
    assert torch.equal(drawn["holdout"][0], training_slice(bundle.val, 96 + 2048, seed=0)[0])  # the validation split
    assert torch.equal(drawn["calib"][0], training_slice(bundle, 160, seed=0)[0])  # from the training split
    with pytest.raises(Drawn):  # no validation split: the fine-tune images are drawn beyond the budget batch
        compress_model(CompressStage(compress=settings, data=DataConfig(val_size=0)), model, "unused.prn", seed=0,
                       progress=False)  # fmt: skip
    assert drawn["holdout"] is None
    assert drawn["calib"][0].shape[0] == 96 + 2048 + 160


@pytest.mark.parametrize(("confidence", "met"), [(0.5, True), (0.95, False)])
def test_the_budget_verdict_is_the_drops_upper_bound_at_the_confidence_asked(confidence, met):
    """100 images, the reference right on all, the compressed model wrong on 1: a 1.0 pt drop with s.e.
    1.0 pt (paired). Under max_drop 2.0 it is met on the point estimate (0.5), not at 95% (1 + 1.645)."""
    from prunus.compress.api import _check_budget

    labels = torch.zeros(100, dtype=torch.long)
    ref = torch.zeros(100, 3)
    ref[:, 0] = 1.0
    out = ref.clone()
    out[7] = torch.tensor([0.0, 1.0, 0.0])
    cfg = CompressConfig(bits="auto", max_drop=2.0, confidence=confidence)
    b = _check_budget(cfg, ref, ref, out, labels)
    assert b["drop_pt"] == pytest.approx(1.0)
    assert b["drop_se_pt"] == pytest.approx(1.0)
    assert b["drop_upper_pt"] == pytest.approx(1.0 + {0.5: 0.0, 0.95: 1.6448536}[confidence], abs=1e-6)
    assert b["met"] is met
    assert b["confidence"] == confidence


def test_confidence_outside_one_half_to_one_is_refused():
    for bad in (0.4, 1.0, 1.5):
        with pytest.raises(prunus.errors.ConfigError, match="CompressConfig.confidence"):
            CompressConfig(confidence=bad)


@pytest.mark.parametrize(
    ("n", "n_big", "verify", "at_least", "split"),
    [
        (8192, 4096, 2048, 1, (4096, 2048)),  # room for both
        (5000, 4096, 2048, 1, (2952, 2048)),  # the validation split of the default data: the budget batch shrinks
        (4096, 4096, 2048, 1, (2048, 2048)),  # not below half
        (3000, 4096, 2048, 1, (1500, 1500)),
        (4096, 4096, 2048, 3000, (3000, 1096)),  # nor below the search's images (they chose the masks)
        (100, 64, 0, 1, (64, 0)),  # verify_size=0: the verdict on the budget batch
        (1, 64, 16, 1, (1, 0)),
    ],
)
def test_the_budget_and_verdict_batches_split_the_images(n, n_big, verify, at_least, split):
    from prunus.compress.api import _budget_split

    assert _budget_split(n, n_big, verify, at_least=at_least) == split


def test_the_bits_are_chosen_on_the_budget_batch_and_the_verdict_read_on_the_images_after_it(monkeypatch):
    """What each step is shown: the allocation the budget batch only; the verdict, report and baselines the rest."""
    api = importlib.import_module("prunus.compress.api")
    seen = {}
    real_allocate, real_check, real_baselines = api.allocate_bits, api._check_budget, api._baselines

    def allocate_bits(student, masks, x, *args, **kwargs):
        seen["allocate"] = x.clone()
        return real_allocate(student, masks, x, *args, **kwargs)

    def check_budget(cfg, ref, s, logits, labels, **kwargs):
        seen["check"] = (ref.clone(), logits.clone(), labels.clone(), kwargs)
        return real_check(cfg, ref, s, logits, labels, **kwargs)

    def baselines(teacher, student, coded, masks, quantizers, x, labels):
        seen["baselines"] = x.clone()
        return real_baselines(teacher, student, coded, masks, quantizers, x, labels)

    for name, fn in (("allocate_bits", allocate_bits), ("_check_budget", check_budget), ("_baselines", baselines)):
        monkeypatch.setattr(api, name, fn)
    model, x = _model_and_images()
    holdout = torch.randn(100, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(100) % 10
    cfg = CompressConfig(**FAST, sparsity=0.5, bits="auto", max_drop=100.0, verify_size=24, escalate=False)
    report = compress(model, x, cfg, holdout=(holdout, labels))
    assert torch.equal(seen["allocate"], holdout[:64])
    with torch.no_grad():
        teacher = model(holdout[64:88])
    ref, logits, got_labels, kwargs = seen["check"]
    assert kwargs == {"independent": True}
    assert torch.equal(ref, teacher)
    assert torch.equal(got_labels, labels[64:88])
    with torch.no_grad():
        assert torch.equal(logits, report.model(holdout[64:88]))
    assert torch.equal(seen["baselines"], holdout[64:88])
    assert report.budget["images"] == 24
    assert report.teacher_acc == float((teacher.argmax(1) == labels[64:88]).float().mean())
    # verify_size=0: the verdict on the budget batch itself, as before the verdict batch existed
    report = compress(model, x, CompressConfig(**{**cfg.to_json(), "verify_size": 0}), holdout=(holdout, labels))
    assert torch.equal(seen["allocate"], holdout[:64])
    assert torch.equal(seen["check"][2], labels[:64])
    assert seen["check"][3] == {"independent": False}
    assert report.budget["images"] == 64


def test_a_negative_verify_size_is_refused():
    with pytest.raises(prunus.errors.ConfigError, match="CompressConfig.verify_size"):
        CompressConfig(verify_size=-1)


def test_on_images_nothing_was_chosen_on_the_measured_drop_decides_and_the_bound_is_reported():
    """The same 1-in-100 miss as above under max_drop 2.0: on independent images the 1.0 pt measured drop is met;
    the 95% bound (2.64 pt) is reported as not met. With max_drop 0.5 the measured drop itself misses."""
    from prunus.compress.api import _check_budget

    labels = torch.zeros(100, dtype=torch.long)
    ref = torch.zeros(100, 3)
    ref[:, 0] = 1.0
    out = ref.clone()
    out[7] = torch.tensor([0.0, 1.0, 0.0])
    b = _check_budget(CompressConfig(bits="auto", max_drop=2.0), ref, ref, out, labels, independent=True)
    assert b["met"] is True
    assert b["met_at_confidence"] is False
    assert b["independent"] is True
    assert b["drop_upper_pt"] == pytest.approx(1.0 + 1.6448536, abs=1e-6)
    b = _check_budget(CompressConfig(bits="auto", max_drop=0.5), ref, ref, out, labels, independent=True)
    assert b["met"] is False


def test_the_verdict_is_independent_only_on_the_verify_batch():
    model, x = _model_and_images()
    cfg = dict(sparsity=0.3, bits="auto", max_drop=100.0)
    assert _compress_without_budget_warning(**cfg).budget["independent"] is True  # 64 images: 32 + 32
    assert _compress_without_budget_warning(**cfg, verify_size=0).budget["independent"] is False


def test_the_verdict_names_the_limit_it_was_judged_on_and_quantizations_share():
    from prunus.cli.compress_cmd import _budget_text

    teacher = {"max_drop": 1.0, "max_kl": None, "met": True, "drop_pt": 0.29, "drop_se_pt": 0.41, "kl": 0.02,
               "against": "input", "pruned_drop_pt": 0.34, "images": 2048, "held_out": True,
               "quant_drop": 0.3, "quant_drop_pt": -0.05}  # fmt: skip
    text = _budget_text(teacher)
    assert "vs the input model (max_drop 1)" in text
    assert "pruning alone +0.34 pt, quantization -0.05 pt vs the pruned model (quant_drop 0.3)" in text
    share = {**teacher, "against": "pruned", "max_drop": 0.3, "drop_pt": -0.05, "quant_drop_pt": -0.05}
    text = _budget_text(share)
    assert "vs the pruned model (quant_drop 0.3)" in text
    assert "quantization -0.05 pt vs the pruned model" not in text  # the verdict is the share itself
    assert "max_drop" not in text
