"""OpenVINO as a deploy runtime: a model converted to OpenVINO's IR, compiled for the CPU plugin, checked.

The model (BN folded first, like the ONNX export) is converted in memory with `openvino.convert_model`
(its PyTorch front end traces the module; no ONNX file and no `onnx` package in between), then
compiled for the "CPU" device with these plugin properties, every one set explicitly so that a
changed default or another CPU cannot change what is measured:

- `INFERENCE_PRECISION_HINT = f32`: the CPU plugin's default on CPUs with bf16 or AMX units is
  bf16 (it is on this project's machine), which would silently change the logits; forced to f32,
  and the compiled model is asked back and refused (`ExportError`) if it reports anything else;
- `EXECUTION_MODE_HINT = ACCURACY`: no precision lowering the plugin could otherwise choose on
  its own (the hint's PERFORMANCE mode allows it); int8 is never used since nothing is quantized;
- `INFERENCE_NUM_THREADS = threads` (0 = the plugin's choice, all cores): the latency of one
  request on that many threads, the same knob as onnxruntime's intra-op threads;
- `PERFORMANCE_HINT = LATENCY` and `NUM_STREAMS = 1`: one request at a time on all the threads,
  what a latency measurement (and a budget planned on it) means, not the throughput mode's
  parallel streams.

The IR on disk is `model.xml` (the graph) + `model.bin` (the weights, kept float32:
`save_model(..., compress_to_fp16=False)`, whose default would halve them to float16).

Needs `pip install 'prunus[openvino]'` (the `openvino` wheel from PyPI, self-contained).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus._io.atomic import atomic_path
from prunus.deploy.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    ExportResult,
    MissingDependencyError,
    _Agreement,
    _as_tuple,
    _deployable,
    _eval_mode,
    _native_stdout_silenced,
    _other_batch,
    _outputs,
    _quiet_deprecations,
)

log = logging.getLogger(__name__)  # progress of the conversion and check (INFO); the CLI prints it

__all__ = ["DEVICE", "cpu_config", "export_openvino", "ov_compile", "ov_model", "require_openvino"]

DEVICE = "CPU"
EXTRA = "pip install 'prunus[openvino]'"


def require_openvino() -> Any:
    """The `openvino` module, or a `MissingDependencyError` naming the extra that installs it.

    Example:
        >>> require_openvino().__name__
        'openvino'
    """
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(f"the openvino runtime needs openvino: {EXTRA}") from exc
    return openvino


def cpu_config(threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin properties every compile uses (see the module docstring for why each).

    Example:
        >>> cpu_config(1)["INFERENCE_NUM_THREADS"], cpu_config()["INFERENCE_PRECISION_HINT"]
        (1, 'f32')
    """
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "EXECUTION_MODE_HINT": "ACCURACY",
        "INFERENCE_NUM_THREADS": int(threads or 0),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }


def ov_model(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    dynamic_batch: bool = True,
    fold_bn: bool = True,
) -> Any:
    """Convert `model` (in eval mode) to an in-memory `openvino.Model`, inputs named like the ONNX export.

    Args:
        model: Any nn.Module taking tensors and returning a tensor or tuple of tensors.
        example_inputs: One tensor (N, C, H, W) or a tuple; traced at these shapes.
        dynamic_batch: Leave dimension 0 of every input symbolic; else the example's batch is fixed
            (a static shape lets the plugin pick its kernels once, as the benchmark wants).
        fold_bn: Convert the BN-folded copy (`prunus.deploy.fold.fold_bn`).

    Raises:
        ExportError: The front end cannot convert the model.
        MissingDependencyError: openvino is not installed.

    Example:
        >>> m = ov_model(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        >>> [i.get_any_name() for i in m.inputs], str(m.inputs[0].get_partial_shape())
        (['input'], '[?,3]')
    """
    inputs = _as_tuple(example_inputs)
    return _convert(model, _deployable(model, fold_bn)[0], inputs, dynamic_batch)


def _convert(model: nn.Module, graph: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> Any:
    ov = require_openvino()
    shapes = [ov.PartialShape([-1 if dynamic_batch else t.shape[0], *t.shape[1:]]) for t in inputs]
    with _eval_mode(model), _eval_mode(graph), torch.no_grad():
        n_out = len(_outputs(model(*inputs)))
        try:
            with _quiet_deprecations(), _native_stdout_silenced():
                converted = ov.convert_model(graph, example_input=inputs, input=shapes)
        except Exception as exc:  # the front end raises OpConversionFailure, RuntimeError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"cannot convert {type(model).__name__} to OpenVINO: {first[:200]}") from exc
    names_in = [INPUT_NAME] if len(inputs) == 1 else [f"{INPUT_NAME}{i}" for i in range(len(inputs))]
    names_out = [OUTPUT_NAME] if n_out == 1 else [f"{OUTPUT_NAME}{i}" for i in range(n_out)]
    for port, name in zip(converted.inputs, names_in):
        port.get_tensor().set_names({name})
    for port, name in zip(converted.outputs, names_out):
        port.get_tensor().set_names({name})
    return converted


def ov_compile(model: Any, threads: int | None = None) -> Any:
    """Compile an `openvino.Model` (or the path of an IR .xml) for the CPU with `cpu_config(threads)`.

    Raises:
        ExportError: The plugin cannot compile it, or it would not run in float32.

    Example:
        >>> compiled = ov_compile(ov_model(torch.nn.Linear(3, 2), torch.zeros(1, 3)), threads=1)
        >>> compiled(np.zeros((4, 3), np.float32))[0].shape
        (4, 2)
    """
    ov = require_openvino()
    core = ov.Core()
    try:
        compiled = core.compile_model(
            str(model) if isinstance(model, (str, Path)) else model, DEVICE, cpu_config(threads)
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"OpenVINO cannot compile the model for {DEVICE}: {first[:200]}") from exc
    got = compiled.get_property("INFERENCE_PRECISION_HINT")
    if got != ov.Type.f32:  # the hint is a request: hold the plugin to it
        raise ExportError(f"OpenVINO compiled the model for {got}, not f32; refusing a silent precision change")
    return compiled


def _check(model: nn.Module, compiled: Any, batches: list[tuple[torch.Tensor, ...]], atol: float, rtol: float) -> float:
    agreement = _Agreement("OpenVINO", atol, rtol)
    with _eval_mode(model), torch.no_grad():
        for inputs in batches:
            expected = _outputs(model(*inputs))
            try:
                result = compiled([t.detach().cpu().numpy() for t in inputs])
            except Exception as exc:
                raise ExportError(f"OpenVINO failed at batch {inputs[0].shape[0]}: {exc}") from exc
            got = [np.asarray(result[port]) for port in compiled.outputs]
            agreement.add(expected, got)
    return agreement.require("torch")


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    fold_bn: bool = True,
    threads: int | None = None,
) -> ExportResult:
    """Export `model` to OpenVINO IR (`path` = the .xml; the .bin beside it) and check it on the CPU plugin.

    The IR is saved to a private temporary folder first; with `check`, that saved pair is read
    back, compiled (`ov_compile`: f32 enforced) and run on `example_inputs` and, when
    `dynamic_batch`, on a second batch size, and the logits must match the eager model's. Only then
    are the weights and the graph moved to `path` (each atomically, the .bin first): a .xml that
    exists is a verified one.

    Args:
        model: The model; converted in eval mode and left in the mode it came in.
        path: The .xml file to write; its weights go to the same name with `.bin`.
        example_inputs: One tensor (N, C, H, W) or a tuple of tensors.
        dynamic_batch: Make the batch axis symbolic.
        check: Compile the saved IR and compare with torch.
        atol, rtol: Every output element must satisfy |OpenVINO - torch| <= atol + rtol * |torch|.
        fold_bn: Convert the BN-folded copy; checked against `model`.
        threads: Threads the check compiles with (None: the plugin's choice).

    Returns:
        ExportResult (format "openvino"; `bytes` = .xml + .bin).

    Raises:
        ExportError: Conversion failed, or the IR differs by more than the tolerance (nothing written).
        MissingDependencyError: openvino is not installed.

    Example:
        >>> import tempfile, pathlib
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
        >>> res = export_openvino(net, pathlib.Path(tempfile.mkdtemp()) / "m.xml", torch.randn(2, 1, 8, 8))
        >>> res.max_abs_diff < 1e-4, res.checked_batches, res.path.with_suffix(".bin").exists()
        (True, (2, 4), True)
    """
    ov = require_openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR is written as NAME.xml + NAME.bin; got {str(path)!r}")
    inputs = _as_tuple(example_inputs)
    graph, folded = _deployable(model, fold_bn)
    start = time.perf_counter()
    log.info("OpenVINO export: converting %s ...", type(model).__name__)
    converted = _convert(model, graph, inputs, dynamic_batch)
    diff, checked = None, ()
    with tempfile.TemporaryDirectory(prefix=".prunus-ov-") as tmp:
        xml = Path(tmp) / "model.xml"
        from prunus._version import __version__

        converted.set_rt_info(__version__, "prunus")  # the marker `--force` looks for (<rt_info><prunus .../>)
        ov.save_model(converted, xml, compress_to_fp16=False)  # the default would store float16 weights
        if check:
            batches = [inputs, _other_batch(inputs)] if dynamic_batch else [inputs]
            log.info("OpenVINO export: compiling (f32) and checking at batch %s (%.1f s so far)",
                     " and ".join(str(b[0].shape[0]) for b in batches), time.perf_counter() - start)  # fmt: skip
            diff = _check(model, ov_compile(xml, threads), batches, atol, rtol)
            checked = tuple(int(b[0].shape[0]) for b in batches)
        graph_xml, weights = xml.read_bytes(), xml.with_suffix(".bin").read_bytes()
    bin_path = path.with_suffix(".bin")
    # The graph goes first and comes back last: a kill in between leaves no .xml (no model) rather
    # than an old graph over new weights, since OpenVINO pairs them by name alone.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for target, data in ((bin_path, weights), (path, graph_xml)):
        with atomic_path(target) as tmp_file:
            tmp_file.write_bytes(data)
    size = path.stat().st_size + bin_path.stat().st_size
    return ExportResult(path, "openvino", size, diff, checked, folded)
