"""ONNX / TorchScript export: the files reproduce the eager logits, are written atomically, fail clearly."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prunus.deploy.export import ExportError, MissingDependencyError, export_onnx, export_torchscript, onnx_bytes
from prunus.errors import PrunusError
from prunus.formats import save
from prunus.models import create_model, list_models


class TinyNet(nn.Module):
    """Conv+BN stem, a residual add, a depthwise conv, flatten -> Linear: the patterns pruning rewrites."""

    def __init__(self, c_in: int = 3, width: int = 4, hw: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.fc = nn.Linear(width * hw * hw, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.fc(torch.flatten(self.dw(x), 1))


class FFTNet(nn.Module):
    """Uses torch.fft, which the ONNX exporter cannot translate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real.flatten(1)


def _net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong train/eval mode would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _x(batch: int, shape: tuple[int, ...] = (3, 8, 8), seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))


def _ort_logits(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_matches_torch_at_two_batch_sizes(tmp_path):
    net = _net()
    res = export_onnx(net, tmp_path / "m.onnx", _x(2))
    assert res.format == "onnx"
    assert res.checked_batches == (2, 4)
    assert 0.0 <= res.max_abs_diff <= 1e-4
    assert res.bytes == (tmp_path / "m.onnx").stat().st_size > 0
    net.eval()
    with torch.no_grad():
        for batch in (1, 7):  # our own check, independent of the one inside export_onnx
            x = _x(batch, seed=batch)
            np.testing.assert_allclose(_ort_logits(res.path, x), net(x).numpy(), atol=1e-4, rtol=0)


def test_onnx_file_is_valid_and_written_atomically(tmp_path):
    net = _net().train()
    export_onnx(net, tmp_path / "sub" / "m.onnx", _x(2))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.onnx"]  # no temp files left
    onnx.checker.check_model(onnx.load(str(tmp_path / "sub" / "m.onnx")))
    assert net.training  # exported in eval mode, handed back in the mode it came in


def test_onnx_static_batch_checks_only_the_example(tmp_path):
    res = export_onnx(_net(), tmp_path / "m.onnx", _x(3), dynamic_batch=False)
    assert res.checked_batches == (3,)
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [3, 3, 8, 8]


def test_onnx_unchecked_export(tmp_path):
    res = export_onnx(_net(), tmp_path / "m.onnx", _x(1), check=False)
    assert res.max_abs_diff is None
    assert res.checked_batches == ()
    assert res.path.exists()


def test_non_exportable_op_gives_clear_error_and_no_file(tmp_path, capfd):
    with pytest.raises(ExportError, match=r"cannot export FFTNet to ONNX .*fft"):
        export_onnx(FFTNet(), tmp_path / "m.onnx", _x(2))
    assert list(tmp_path.iterdir()) == []
    assert "Torch IR graph" not in capfd.readouterr().out  # torch's native graph dump is silenced
    assert issubclass(ExportError, PrunusError)


def test_mismatch_beyond_atol_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="ONNX logits differ"):
        export_onnx(_net(), tmp_path / "m.onnx", _x(2), atol=-1.0)
    with pytest.raises(ExportError, match="TorchScript logits differ"):
        export_torchscript(_net(), tmp_path / "m.pt", _x(2), atol=-1.0)
    assert list(tmp_path.iterdir()) == []


def _far_from_zero() -> TinyNet:
    """Logits in [90, 110]: a relative tolerance of 1.0 covers any runtime difference, no absolute one does."""
    net = _net()
    with torch.no_grad():
        net.fc.bias.fill_(100.0)
        net.fc.weight.mul_(0.01)
    return net


def test_tolerance_scales_with_the_outputs(tmp_path):
    # atol < 0 can only pass through rtol * |eager|: a dropped or unused rtol fails this
    res = export_onnx(_far_from_zero(), tmp_path / "m.onnx", _x(2), atol=-1e-6, rtol=1.0)
    assert res.checked_batches == (2, 4)
    res = export_torchscript(_far_from_zero(), tmp_path / "m.pt", _x(2), atol=-1e-6, rtol=1.0)
    assert res.checked_batches == (2, 4)
    with pytest.raises(ExportError, match=r"more than atol -1e-06 \+ rtol 0 x \|torch\|"):
        export_onnx(_far_from_zero(), tmp_path / "n.onnx", _x(2), atol=-1e-6, rtol=0.0)
    assert not (tmp_path / "n.onnx").exists()


@pytest.mark.parametrize(
    ("eager", "runtime", "ok"),
    [
        ([1000.0, 2.0], [1000.05, 2.0], True),  # 0.05 <= 1e-4 + 1e-4 * 1000
        ([-1000.0, 2.0], [-1000.05, 2.0], True),  # the same below zero: rtol scales |eager|
        ([1000.0, 0.001], [1000.0, 0.0013], False),  # 3e-4 near zero: beyond atol + rtol * 0.001
        ([1000.0, 2.0], [1000.2, 2.0], False),  # 0.2 > 0.1001
        ([1.0, 2.0], [float("nan"), 2.0], False),
        ([1.0, 2.0], [float("inf"), 2.0], False),
    ],
)
def test_agreement_is_elementwise_isclose(eager, runtime, ok):
    from prunus.deploy.export import _Agreement

    agreement = _Agreement("ONNX", atol=1e-4, rtol=1e-4)
    agreement.add([torch.tensor(eager)], [np.array(runtime, dtype=np.float32)])
    assert agreement.ok is ok
    assert agreement.ok == bool(np.all(np.isclose(runtime, eager, rtol=1e-4, atol=1e-4)))


class OddPoolNet(nn.Module):
    """Adaptive average pools whose output sizes do not divide their inputs (timm's VGG head at small inputs)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        conv, pool = (nn.Conv1d, nn.AdaptiveAvgPool1d) if rank == 1 else (nn.Conv2d, nn.AdaptiveAvgPool2d)
        self.rank = rank
        self.conv = conv(3, 4, 3, stride=4)  # 10 -> 2
        self.pool = pool(7 if rank == 1 else (7, 5))
        self.fc = nn.Linear(4 * (7 if rank == 1 else 35), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        side = nn.functional.adaptive_avg_pool2d(y, (None, 3)) if self.rank == 2 else y  # None keeps an axis
        return self.fc(self.pool(y).flatten(1)) + side.mean()


@pytest.mark.parametrize("rank", [1, 2])
def test_adaptive_pool_to_a_size_that_does_not_divide_exports(rank, tmp_path):
    torch.manual_seed(0)
    net = OddPoolNet(rank).eval()
    x = _x(2, (3, 10) if rank == 1 else (3, 10, 10))
    res = export_onnx(net, tmp_path / "m.onnx", x)
    assert res.checked_batches == (2, 4)
    x5 = _x(5, (3, 10) if rank == 1 else (3, 10, 10), seed=7)
    np.testing.assert_allclose(_ort_logits(res.path, x5), net(x5).detach().numpy(), atol=1e-5, rtol=1e-5)


def test_pool_matrix_bins_are_adaptive_pooling_bins():
    from prunus.deploy.export import _pool_matrix

    x = torch.arange(2.0 * 7).reshape(2, 7)
    for n_out in (1, 2, 3, 5, 7, 9):  # shrinking, equal and growing
        want = nn.functional.adaptive_avg_pool1d(x[None], n_out)[0]
        torch.testing.assert_close(x @ _pool_matrix(7, n_out, x).t(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_dependency_says_how_to_install(module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(MissingDependencyError, match=rf"needs {module}: pip install 'prunus\[export\]'"):
        export_onnx(_net(), tmp_path / "m.onnx", _x(2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # torch >= 2.9
def test_torchscript_matches_eager(tmp_path):
    net = _net()
    res = export_torchscript(net, tmp_path / "m.pt", _x(2))
    assert res.format == "torchscript"
    assert res.checked_batches == (2, 4)
    assert 0.0 <= res.max_abs_diff <= 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    loaded = torch.jit.load(str(res.path))
    net.eval()
    with torch.no_grad():
        x = _x(5, seed=5)
        assert (loaded(x) - net(x)).abs().max().item() <= 1e-5


def test_onnx_bytes_in_memory():
    data = onnx_bytes(_net(), _x(1))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.run(None, {"input": _x(6).numpy()})[0].shape == (6, 5)


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Give BN layers the statistics of real activations, as training would.

    With the init statistics (mean 0, var 1) logits of a deep untrained ResNet grow to ~1e6, where
    float32 rounding alone exceeds an absolute 1e-4; trained models have logits of order 1-10.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one batch sets the statistics exactly
    with torch.no_grad():
        model.train()(x)


@pytest.mark.parametrize("name", list_models())
def test_registry_models_export_to_onnx(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, width_mult=0.25)
    _calibrate_bn(model, _x(8, shape=(1, 28, 28), seed=8))
    x = _x(2, shape=(1, 28, 28))
    res = export_onnx(model, tmp_path / f"{name}.onnx", x)
    assert res.checked_batches == (2, 4)
    assert res.max_abs_diff <= 1e-4
    model.eval()
    with torch.no_grad():
        x3 = _x(3, shape=(1, 28, 28), seed=3)
        np.testing.assert_allclose(_ort_logits(res.path, x3), model(x3).numpy(), atol=1e-4, rtol=0)


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    model = create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.25)
    return save(model, tmp_path / "model", input_shape=(1, 28, 28))


@pytest.mark.parametrize(("fmt", "name"), [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_cli_export(model_dir, fmt, name, capsys):
    from prunus.cli import main

    assert main(["export", str(model_dir), "--format", fmt]) == 0
    assert (model_dir / name).stat().st_size > 0
    captured = capsys.readouterr()
    assert name in captured.out
    # progress while converting and checking (a large model takes minutes)
    what = {"onnx": ("ONNX export: converting", "ONNX export: checking in onnxruntime at batch 1 and 3"),
            "torchscript": ("TorchScript export: tracing",
                            "TorchScript export: checking the reloaded module at batch 1 and 3")}[fmt]  # fmt: skip
    for line in what:
        assert f"prunus: {line}" in captured.err


def test_cli_export_out_path_and_opset(model_dir, tmp_path):
    from prunus.cli import main

    out = tmp_path / "exported" / "r20.onnx"
    assert main(["export", str(model_dir), "--out", str(out), "--opset", "13"]) == 0
    assert onnx.load(str(out)).opset_import[0].version == 13


def test_cli_export_bad_format_is_one_line_exit_2(model_dir, capsys):
    from prunus.cli import main

    assert main(["export", str(model_dir), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("prunus: error:")
    assert "onnx, torchscript" in err


def test_cli_export_missing_dir_exit_2(tmp_path, capsys):
    from prunus.cli import main

    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


class NaNInOnnx(nn.Module):
    """Finite logits in torch; the exported graph multiplies them by NaN (an ONNX model that outputs NaN)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if torch.onnx.is_in_onnx_export():
            out = out * float("nan")
        return out


def test_an_onnx_model_that_outputs_nan_fails_the_check_and_writes_nothing(tmp_path):
    model, x = NaNInOnnx(), torch.randn(2, 3, 8, 8)
    assert torch.isfinite(model(x)).all()
    got = ort.InferenceSession(onnx_bytes(model, x), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    assert np.isnan(got[0]).all()  # the file really computes NaN
    with pytest.raises(ExportError, match="ONNX logits differ from torch by inf"):
        export_onnx(model, tmp_path / "m.onnx", x)
    assert list(tmp_path.iterdir()) == []


def test_a_float64_model_onnxruntime_cannot_run_says_to_export_it_as_float32(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    with pytest.raises(ExportError, match=r"the model's weights are float64; .* export model\.float\(\)"):
        export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 1, 6, 6, dtype=torch.float64))
    assert not (tmp_path / "m.onnx").exists()
    res = export_onnx(model.float(), tmp_path / "m.onnx", torch.zeros(1, 1, 6, 6))  # as the message says
    assert res.max_abs_diff <= 1e-4


class _KeywordOnly(nn.Module):
    """A forward with a keyword-only option: torch.onnx's tracer passed its default positionally."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor, *, scale: float = 2.0) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) * scale


def test_a_forward_with_keyword_only_parameters_exports_with_their_defaults(tmp_path):
    model = _KeywordOnly().eval()
    x = torch.randn(3, 1, 6, 6)
    res = export_onnx(model, tmp_path / "m.onnx", x[:1])
    got = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)  # scale=2.0 applied
    assert [i.name for i in onnx.load(str(res.path)).graph.input] == ["input"]


class _DilatedSame(nn.Module):
    """A TCN's convs: padding="same" with dilations (and one even kernel, whose "same" pads unevenly)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, 4, 3, padding="same", dilation=2)
        self.b = nn.Conv1d(4, 4, 3, padding="same", dilation=4)
        self.even = nn.Conv1d(4, 4, 4, padding="same")
        self.c = nn.Conv2d(1, 3, 3, padding="same", dilation=(1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.even(torch.relu(self.b(torch.relu(self.a(x)))))
        img = self.c(x[:, :1].unsqueeze(1).expand(-1, 1, 4, -1))
        return torch.cat([seq.mean(-1), img.mean((2, 3))], 1)


def test_dilated_same_padding_exports_to_onnxruntime(tmp_path):
    """torch.onnx wrote padding="same" as auto_pad, which onnxruntime refuses with a dilation."""
    torch.manual_seed(0)
    model = _DilatedSame().eval()
    x = torch.randn(3, 2, 20)
    res = export_onnx(model, tmp_path / "m.onnx", x[:1])
    assert res.max_abs_diff <= 1e-4  # checked in onnxruntime at two batch sizes
    got = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert [m.padding for m in (model.a, model.b, model.even, model.c)] == ["same"] * 4  # the user's model as it was
    unfolded = export_onnx(model, tmp_path / "u.onnx", x[:1], fold_bn=False)  # no folded copy to rewrite
    assert unfolded.max_abs_diff <= 1e-4
    assert [m.padding for m in (model.a, model.b, model.even, model.c)] == ["same"] * 4
