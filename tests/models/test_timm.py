"""timm as a model source: `timm:NAME` in create_model, prune, save/load, the CLI and recipes.

A handful of small timm models at 32x32 (widths reduced where the family takes them as arguments).
That the pruned model equals the masked one is the structure engine's promise (tests/structure);
here: the timm path builds timm's own model, prune meets the MACs budget within 5% below it while
keeping timm's stem and classifier (from its pretrained_cfg), save/load is exact with no trust flag,
and every misuse is one line. The tests need timm (the `timm` extra; `make test` installs it); the
torchvision it imports is the tests' stand-in where no real one loads (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

import prunus
from prunus.errors import ConfigError, PrunusError
from prunus.formats.model_dir import read_model_json
from prunus.formats.run_dir import resolve_model_dir
from prunus.models.info import get_info

SHAPE = (3, 32, 32)
# name, timm kwargs (narrow where the family takes widths), timm's stem and classifier (pretrained_cfg)
MODELS = [
    ("resnet18", {"channels": [16, 32, 64, 128], "stem_width": 16}, "conv1", "fc"),
    ("mobilenetv3_small_050", {}, "conv_stem", "classifier"),
    ("convnext_atto", {"dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]}, "stem.0", "head.fc"),
    ("tinynet_e", {}, "conv_stem", "classifier"),
    ("dla46_c", {}, "base_layer.0", "fc"),  # its classifier is a 1x1 Conv2d: no "last Linear" to fall back on
]


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_timm_name_builds_timms_model_and_records_how_to_rebuild_it(timm):
    kwargs = {"channels": [16, 32, 64, 128], "stem_width": 16}
    torch.manual_seed(0)
    ours = prunus.create_model("timm:resnet18", num_classes=10, in_channels=3, **kwargs)
    torch.manual_seed(0)
    theirs = timm.create_model("resnet18", num_classes=10, in_chans=3, **kwargs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    info = get_info(ours)
    assert info.arch == {
        "factory": "timm:create_model",
        "kwargs": {"model_name": "resnet18", "num_classes": 10, "in_chans": 3, **kwargs},
    }
    assert (info.stem, info.classifier) == ("conv1", "fc")
    assert prunus.create_model("timm:resnet18", pretrained=False, width_mult=1.0).fc.out_features == 1000


@pytest.mark.parametrize(("name", "kwargs", "stem", "classifier"), MODELS, ids=[m[0] for m in MODELS])
def test_prune_meets_the_macs_budget_keeps_stem_and_classifier_and_reloads_exactly(
    timm, tmp_path, name, kwargs, stem, classifier
):
    torch.manual_seed(0)
    model = prunus.create_model(f"timm:{name}", num_classes=10, in_channels=3, **kwargs)
    assert (get_info(model).stem, get_info(model).classifier) == (stem, classifier)
    stem_width = model.get_submodule(stem).out_channels
    dense_macs = prunus.count(model, SHAPE).macs
    pruned, _ = prunus.prune(model, torch.zeros(1, *SHAPE), keep_macs=0.5)
    kept = prunus.count(pruned, SHAPE).macs / dense_macs
    assert 0.5 * 0.95 <= kept <= 0.5, kept  # the budget, met within 5% below it
    assert pruned.get_submodule(stem).out_channels == stem_width  # timm's stem is left whole
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    out = _outputs(pruned, x)
    assert out.shape == (3, 10)  # the classifier keeps its classes (dla46_c's is a conv)
    prunus.save(pruned, tmp_path / "m", input_shape=SHAPE)
    loaded = prunus.load(tmp_path / "m")  # no trust flag: timm:create_model is a built-in factory
    assert torch.equal(_outputs(loaded, x), out)
    assert get_info(loaded).arch == get_info(pruned).arch
    assert (get_info(loaded).stem, get_info(loaded).classifier) == (stem, classifier)


def test_load_trusts_timms_factory_by_name_only(timm, tmp_path):
    """The same builder under another module:function name is a user factory: it needs the opt-in."""
    torch.manual_seed(0)
    model = prunus.create_model("timm:mobilenetv3_small_050", num_classes=4)
    prunus.save(model, tmp_path / "m", input_shape=SHAPE)
    header = json.loads((tmp_path / "m" / "model.json").read_text())
    header["arch"]["factory"] = "prunus.models.timm_models:create_from_record"
    (tmp_path / "m" / "model.json").write_text(json.dumps(header))
    with pytest.raises(PrunusError, match="trust_factory=True"):
        prunus.load(tmp_path / "m")
    loaded = prunus.load(tmp_path / "m", trust_factory=True)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pretrained": True}, r"pretrained=True is not supported"),
        ({"checkpoint_path": "/etc/passwd"}, r"checkpoint_path read weights or configurations from elsewhere"),
        ({"pretrained_cfg_overlay": {"file": "/tmp/w.pth"}}, r"pretrained_cfg_overlay read weights"),
        ({"model_name": "hf-hub:timm/resnet18.a1_in1k"}, r"unknown timm model 'hf-hub:timm/resnet18.a1_in1k'"),
        ({"model_name": "local-dir:/tmp"}, r"unknown timm model 'local-dir:/tmp'"),
    ],
    ids=["pretrained", "checkpoint_path", "cfg_overlay", "hf_hub", "local_dir"],
)
def test_a_model_file_cannot_make_timm_fetch_or_read_anything(timm, tmp_path, change, match):
    prunus.save(prunus.create_model("timm:mobilenetv3_small_050", num_classes=4), tmp_path / "m", input_shape=SHAPE)
    header = json.loads((tmp_path / "m" / "model.json").read_text())
    header["arch"]["kwargs"].update(change)
    (tmp_path / "m" / "model.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match=match) as exc:
        prunus.load(tmp_path / "m")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("timm:resnet19", {}, r"^unknown timm model 'resnet19'; did you mean timm:resnet18"),
        ("timm:resnet18", {"pretrained": True}, r"^timm:resnet18: pretrained=True is not supported: .* never fetches"),
        ("timm:resnet18", {"width_mult": 0.5}, r"^timm:resnet18 takes no width_mult \(got 0.5\)"),
        ("timm:resnet18", {"bogus": 1}, r"^timm:resnet18 cannot be built with .*unexpected keyword argument 'bogus'"),
        ("timm:resnet18", {"num_classes": -1}, r"^num_classes"),
        ("timm:resnet18", {"in_channels": 3, "in_chans": 3}, r"in_channels or in_chans, not both"),
    ],
    ids=["unknown", "pretrained", "width_mult", "bad_kwarg", "num_classes", "both_channels"],
)
def test_bad_timm_requests_are_one_line_errors(timm, name, kwargs, match):
    with pytest.raises(ConfigError, match=match) as exc:
        prunus.create_model(name, **kwargs)
    assert "\n" not in str(exc.value)


def test_missing_timm_names_the_extra(monkeypatch, capsys):
    from prunus.cli import main

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"^timm models need the timm package: pip install prunus\[timm\]$"):
        prunus.create_model("timm:resnet18")
    assert main(["models", "--source", "timm"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "prunus: error: timm models need the timm package: pip install prunus[timm]"
    ]


def test_cli_prune_builds_a_fresh_timm_model_and_meets_the_budget(timm, tmp_path, capsys):
    from prunus.cli import main

    argv = ["prune", "--model", "timm:mobilenetv3_small_050", "--input-shape", "3,32,32", "--num-classes", "10"]
    argv += ["--keep-macs", "0.5", "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "built with random initialisation (seed 0, no pretrained weights)" in capsys.readouterr().out
    pruned = prunus.load(tmp_path / "run")  # the chain's final model, no trust flag
    dense = prunus.load(read_model_json(resolve_model_dir(tmp_path / "run"))["extra"]["source"])
    torch.manual_seed(0)  # the create stage's seed: the same fresh model as building it here
    fresh = prunus.create_model("timm:mobilenetv3_small_050", num_classes=10, in_channels=3)
    for (key, a), (_, b) in zip(dense.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
    kept = prunus.count(pruned, SHAPE).macs / prunus.count(dense, SHAPE).macs
    assert 0.475 <= kept <= 0.5
    assert get_info(pruned).arch["kwargs"] == {"model_name": "mobilenetv3_small_050", "num_classes": 10, "in_chans": 3}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--model", "timm:nonet", "--input-shape", "3,32,32"], r"unknown timm model 'nonet'"),
        (["--model", "timm:resnet18"], r"--model timm:resnet18 needs --input-shape C,H,W"),
        ([], r"give a model directory, or --model NAME --input-shape C,H,W"),
        (
            ["MODEL_DIR", "--model", "timm:resnet18"],
            r"give a model directory \(.*\) or --model timm:resnet18, not both",
        ),
        (["MODEL_DIR", "--num-classes", "3"], r"--num-classes describes a fresh --model; a model directory records"),
    ],
    ids=["unknown", "no_shape", "no_model", "both", "shape_flag_with_dir"],
)
def test_cli_prune_misuse_of_model_is_one_line(timm, tmp_path, capsys, extra, match):
    from prunus.cli import main

    if "MODEL_DIR" in extra:
        prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path / "m", input_shape=(1, 28, 28))
        extra = [str(tmp_path / "m") if a == "MODEL_DIR" else a for a in extra]
    assert main(["prune", *extra, "--remove-channels", "0.5", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("prunus: error: ")
    assert re.search(match, err[0]), err
    assert not (tmp_path / "run").exists()


def test_cli_train_takes_a_timm_model(timm, tmp_path, capsys):
    from prunus.cli import main

    argv = ["train", "--model", "timm:mobilenetv3_small_050", "--data", "synthetic", "--subset", "64", "--val-size"]
    argv += [
        "0",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 0
    capsys.readouterr()
    model = prunus.load(tmp_path / "r")
    assert get_info(model).arch["kwargs"] == {"model_name": "mobilenetv3_small_050", "num_classes": 10, "in_chans": 1}
    with pytest.raises(SystemExit) as exc:  # a usage error: argparse exits
        main(["train", "--model", "nonet", "--data", "synthetic", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith("vgg16_bn, or timm:NAME) (see 'prunus train --help')")


def test_cli_models_lists_timm_models_by_pattern(timm, capsys):
    from prunus.cli import main

    assert main(["models", "--source", "timm", "mobilenetv3_small_*"]) == 0
    out = capsys.readouterr().out
    expected = timm.list_models("mobilenetv3_small_*")
    assert len(expected) >= 2
    for name in expected:
        assert f"timm:{name} " in out
    assert "timm:mobilenetv3_large_100" not in out
    assert "conv_stem / classifier" in out


def test_recipe_trains_and_prunes_a_timm_model_with_its_kwargs(timm, tmp_path):
    from prunus.pipeline import parse_recipe, run_pipeline

    kwargs = {"channels": [16, 32, 64, 128], "stem_width": 16}
    recipe = {
        "version": 1,
        "name": "timm",
        "model": {"name": "timm:resnet18", "kwargs": kwargs},
        "data": {"name": "synthetic", "num_samples": 64, "image_size": 32, "channels": 3, "num_classes": 4,
                 "val_size": 0, "batch_size": 32},
        "train": {"threads": 1, "epochs": 1},
        "stages": [{"stage": "train"}, {"stage": "prune", "keep_macs": 0.5}],
    }  # fmt: skip
    run_pipeline(parse_recipe(recipe), tmp_path / "run", progress=False, echo=lambda line: None)
    pruned = prunus.load(tmp_path / "run")
    arch = get_info(pruned).arch
    assert arch["kwargs"] == {"model_name": "resnet18", "num_classes": 4, "in_chans": 3, **kwargs}
    dense = prunus.create_model("timm:resnet18", num_classes=4, in_channels=3, **kwargs)
    kept = prunus.count(pruned, SHAPE).macs / prunus.count(dense, SHAPE).macs
    assert 0.475 <= kept <= 0.5
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet19'"):
        parse_recipe({**recipe, "model": {"name": "timm:resnet19"}})
