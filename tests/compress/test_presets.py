"""The compress presets: the fields left at "auto" are filled for the kind of model compressed.

Expected values are written out by hand (the measured ResNet-20 command, the LeNet-300-100
settings), not read back from `PRESETS`: a changed preset value must fail here.
"""

import pytest
import torch
import torch.nn as nn

from prunus.compress import CompressConfig, compress
from prunus.compress.escalate import rungs
from prunus.compress.presets import model_kind, resolve
from prunus.compress.prn import read_prn
from prunus.errors import ConfigError

MLP_VALUES = {"allocation": "uniform", "calib_size": 1024, "rescore_size": 4096, "elite_rescore_size": None,
              "generations": 4, "cycles": 8, "recovery_steps": 0, "finetune_size": 4096, "quant_drop": None}  # fmt: skip
CONVNET_VALUES = {"allocation": "global", "calib_size": 128, "rescore_size": 2048, "elite_rescore_size": 512,
                  "generations": 3, "cycles": 4, "recovery_steps": 300, "finetune_size": 16384,
                  "quant_drop": 0.3}  # fmt: skip


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 4)).eval()


def _values(cfg):
    return {k: getattr(cfg, k) for k in MLP_VALUES}


def test_a_conv_net_gets_the_convnet_preset_and_an_mlp_the_mlp_preset():
    assert model_kind(_convnet()) == "convnet"
    assert model_kind(_mlp()) == "mlp"
    conv1d = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 2))  # the search prunes every conv rank
    assert model_kind(conv1d) == "convnet"
    assert model_kind(nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten())) == "convnet"
    conv = CompressConfig().resolved(_convnet())
    assert conv.preset == "convnet"
    assert _values(conv) == CONVNET_VALUES
    mlp = CompressConfig().resolved(_mlp())
    assert mlp.preset == "mlp"
    assert _values(mlp) == MLP_VALUES


def test_every_value_the_user_gives_is_kept():
    given = {"allocation": "uniform", "calib_size": 64, "rescore_size": 100, "elite_rescore_size": None,
             "generations": 2, "cycles": 6, "recovery_steps": 0, "finetune_size": 10, "quant_drop": None}  # fmt: skip
    assert _values(CompressConfig(**given).resolved(_convnet())) == given
    one = CompressConfig(cycles=6).resolved(_convnet())
    assert _values(one) == {**CONVNET_VALUES, "cycles": 6}
    # an explicit preset wins over the model's kind, both ways
    assert _values(CompressConfig(preset="mlp").resolved(_convnet())) == MLP_VALUES
    assert _values(CompressConfig(preset="convnet").resolved(_mlp())) == CONVNET_VALUES


def test_a_per_layer_sparsity_keeps_its_own_allocation_on_a_conv_net():
    cfg = CompressConfig(sparsity={"0": 0.5, "3": 0.8}).resolved(_convnet())
    assert cfg.allocation == "uniform"
    assert cfg.recovery_steps == 300  # the rest of the preset still applies


def test_resolving_twice_changes_nothing():
    once = CompressConfig().resolved(_convnet())
    assert resolve(once, _mlp()) == once  # resolved: the preset is named, another model does not change it


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"preset": "cnn"}, r"CompressConfig.preset='cnn' is not valid; choose one of: auto, mlp, convnet"),
        ({"cycles": "many"}, r"CompressConfig.cycles='many' is not valid; expected a number or 'auto'"),
        ({"allocation": "spread"}, r"CompressConfig.allocation='spread' is not valid"),
        ({"quant_drop": "half"}, r"CompressConfig.quant_drop='half' is not valid; expected a number or 'auto'"),
        ({"elite_rescore_size": "some"}, r"CompressConfig.elite_rescore_size='some' is not valid"),
        # 'auto' may resolve to no quantization share (mlp): a budget must not depend on the model
        ({"max_drop": None}, r"bits='auto' needs a budget"),
    ],
)
def test_bad_preset_values_are_refused_with_the_field_named(given, match):
    with pytest.raises(ConfigError, match=match):
        CompressConfig(**given)


def test_an_unresolved_config_cannot_run_a_search():
    with pytest.raises(ConfigError, match=r"are 'auto': resolve the preset first"):
        CompressConfig().search_settings()


def test_the_convnet_ladder_starts_at_its_fine_tune_and_only_raises_it():
    conv = CompressConfig(max_drop=1.0).resolved(_convnet())
    assert [change for change, _ in rungs(conv)] == [
        {"finetune_steps": 1500},
        {"finetune_steps": 2000},
        {"finetune_steps": 2000, "codebook_steps": 500},
    ]
    assert [c.finetune_steps for _, c in rungs(conv)] == [1500, 2000, 2000]
    mlp = CompressConfig(max_drop=1.0).resolved(_mlp())
    assert [c.finetune_steps for _, c in rungs(mlp)] == [None, 300, 2000, 2000]
    # an explicit fine-tune is kept on a conv net too: only the codebook rung is left
    explicit = CompressConfig(max_drop=1.0, finetune_steps=100).resolved(_convnet())
    assert [change for change, _ in rungs(explicit)] == [{}, {"codebook_steps": 500}]


def test_a_default_compression_of_a_conv_net_runs_the_convnet_settings(tmp_path):
    """Through `compress`: 4 cycles, a recovery after each but the last, the 1500-step fine-tune."""
    torch.manual_seed(1)
    x = torch.randn(96, 1, 8, 8)
    cfg = CompressConfig(bits=4, population=2, elite=1, verify_size=16)
    report = compress(_convnet(), x, cfg, baselines=False)
    assert sorted({e["cycle"] for e in report.search_log}) == [1, 2, 3, 4]
    assert "recovery" in report.seconds
    assert report.config["preset"] == "convnet"
    assert report.config["finetune_steps"] == 1500
    assert report.config["recovery_steps"] == 300
    assert report.config["calib_size"] == 128
    assert report.attempts[0]["settings"] == "finetune_steps=1500"
    mlp = compress(_mlp(), x, CompressConfig(bits=4, population=2, elite=1, verify_size=16), baselines=False)
    assert sorted({e["cycle"] for e in mlp.search_log}) == list(range(1, 9))
    assert "recovery" not in mlp.seconds
    assert mlp.config["finetune_steps"] is None


def test_a_file_stores_its_preset_and_only_what_differs_from_it(tmp_path):
    import prunus

    torch.manual_seed(0)
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25).eval()
    cfg = CompressConfig(sparsity=0.5, bits=4, population=2, elite=1, cycles=1, generations=1, finetune_steps=0)
    compress(model, torch.randn(24, 1, 28, 28), cfg, out=tmp_path / "m.prn", baselines=False)
    assert read_prn(tmp_path / "m.prn").header["config"] == {"preset": "convnet", "sparsity": 0.5, "bits": 4, "population": 2, "elite": 1, "cycles": 1,
                      "generations": 1, "finetune_steps": 0}  # fmt: skip


def test_the_compress_command_says_which_preset_ran(tmp_path, capsys, monkeypatch):
    import prunus
    from prunus.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    torch.manual_seed(0)
    prunus.save(prunus.create_model("lenet5", in_channels=1, width_mult=0.25), tmp_path / "m", input_shape=(1, 28, 28))
    small = ["--data", "synthetic", "--bits", "4", "--calib-size", "16", "--rescore-size", "16", "--set", "cycles=1",
             "--set", "generations=1", "--finetune-steps", "0", "--no-progress"]  # fmt: skip
    assert main(["compress", str(tmp_path / "m"), *small, "--out", str(tmp_path / "a.prn")]) == 0
    assert "convnet (chosen: the model has a convolution)" in capsys.readouterr().out
    assert main(["compress", str(tmp_path / "m"), *small, "--preset", "mlp", "--out", str(tmp_path / "b.prn")]) == 0
    assert "mlp (as given)" in capsys.readouterr().out


def test_the_teacher_sees_the_calibration_set_in_chunks(tmp_path):
    """One pass over all 16384 fine-tune images of the convnet preset held ~24 GB of MobileNetV2 activations."""
    from prunus.compress.api import TEACHER_CHUNK, teacher_logits

    teacher = _mlp()
    x = torch.randn(2 * TEACHER_CHUNK + 100, 1, 8, 8)
    assert torch.allclose(teacher_logits(teacher, x, chunk=7), teacher(x), atol=1e-6)
    seen = []
    teacher.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]) if m is teacher else None)
    compress(teacher, x, CompressConfig(bits=4, population=2, elite=1, cycles=1, generations=1), baselines=False)
    assert sum(seen) >= x.shape[0]  # every calibration image went through the teacher ...
    assert max(seen) <= TEACHER_CHUNK  # ... never more than a chunk at a time
