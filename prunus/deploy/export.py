"""Export a (pruned) model to ONNX or TorchScript, checked against the eager model.

Both exporters put the model in eval mode, write the file atomically, reload it in its target
runtime (onnxruntime on CPU, `torch.jit.load`) and compare the logits with the eager model's on
the example batch and on a second batch size, so a file that exists is a file that works.

By default the exported graph is `fold_bn(model)`: every BatchNorm that directly follows a conv is
folded into it (one memory pass less per BN); the check still compares against the original,
unfolded eager model. A model torch.fx cannot trace is exported as it is (`folded_bn` = 0).

ONNX uses the classic TorchScript-based exporter (`dynamo=False`): it needs only `onnx` to write
the file, while the torch.export-based one would also need `onnxscript`. Checking the file needs
`onnxruntime`. Both come with `pip install 'prunus[export]'`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus._io.atomic import atomic_path
from prunus.errors import MissingDependencyError, PrunusError, first_line, require
from prunus.models.eager import unwrap_parallel

log = logging.getLogger(__name__)  # progress of conversions and checks (INFO); the CLI prints it

__all__ = [
    "ExportError",
    "ExportResult",
    "MissingDependencyError",
    "export_onnx",
    "export_torchscript",
    "onnx_bytes",
    "ort_session",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# how a file says prunus wrote it (`prunus.formats.outputs.written_by_prunus` reads these for --force)
WRITER_KEY = "prunus"  # ONNX metadata_props key; the value is the prunus version
TORCHSCRIPT_MARKER = "prunus.json"  # an extra file inside the TorchScript archive


def _marker_json() -> str:
    from prunus._version import __version__

    return json.dumps({"prunus": __version__})


class ExportError(PrunusError, RuntimeError):
    """The model cannot be exported, or the exported file does not reproduce the eager logits."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how closely the file reproduces the eager model.

    Attributes:
        path: The written file.
        format: "onnx" or "torchscript".
        bytes: Size of the file on disk.
        max_abs_diff: Largest |file logits - eager logits| over the checked batches; None if unchecked.
        checked_batches: Batch sizes the file was run at during the check (empty if unchecked).
        folded_bn: BatchNorms folded into the conv before them in the exported graph.
    """

    path: Path
    format: str
    bytes: int
    max_abs_diff: float | None
    checked_batches: tuple[int, ...] = ()
    folded_bn: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "path": str(self.path),
            "format": self.format,
            "bytes": self.bytes,
            "max_abs_diff": self.max_abs_diff,
            "checked_batches": list(self.checked_batches),
            "folded_bn": self.folded_bn,
        }


def _as_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    raise ExportError(f"model output must be a tensor or a tuple of tensors, got {type(out).__name__}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the export, then the caller's mode back (exports must not change the model)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # torch 2.9+ marks the TorchScript-based ONNX exporter and torch.jit deprecated; they are
    # still the way to get these formats without onnxscript, so don't flood the user with it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Discard what C++ code writes to file descriptor 1 inside the block.

    torch's TorchScript-based ONNX exporter leaves its native log switched on (a bug in
    `setup_onnx_logging`, seen in torch 2.13) and dumps the whole IR graph to stdout before
    raising on an unsupported operator; the CLI must print one line instead. Python-level output
    of other threads during the export would be lost too, which the export never overlaps with.
    """
    fd = 1  # C++ std::cout writes here whatever sys.stdout has been replaced with
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 1 at all: nothing to silence
        yield
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()  # Python output buffered so far must not be swallowed
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _other_batch(inputs: tuple[torch.Tensor, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs like `inputs` but with a different batch size, to prove the batch axis is dynamic."""
    batch = inputs[0].shape[0]
    other = batch + 2 if batch <= 2 else batch - 1
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn((other, *t.shape[1:]), generator=gen, dtype=torch.float32).to(t.dtype).to(t.device)
        if t.is_floating_point()
        else t[:1].repeat(other, *([1] * (t.dim() - 1)))
        for t in inputs
    )


class _Agreement:
    """Runtime outputs vs eager ones, element by element: |runtime - eager| <= atol + rtol * |eager|.

    The `numpy.isclose` rule: a deep random-init net's logits reach tens, where float32 reordering
    alone moves them by more than a fixed 1e-4; `rtol` scales with them, `atol` covers values near 0.
    A NaN or inf anywhere fails.

    Example:
        >>> a = _Agreement("ONNX", atol=1e-4, rtol=1e-4)
        >>> a.add([torch.tensor([100.0])], [np.array([100.005], dtype=np.float32)])
        >>> round(a.worst, 4), a.ok
        (0.005, True)
    """

    def __init__(self, what: str, atol: float, rtol: float) -> None:
        self.what, self.atol, self.rtol = what, atol, rtol
        self.worst = 0.0  # largest |runtime - eager|, reported as `max_abs_diff`
        self.excess = -float("inf")  # largest |runtime - eager| - rtol * |eager|: must stay <= atol

    def add(self, expected: list[torch.Tensor], actual: Sequence[Any]) -> None:
        if len(expected) != len(actual):
            raise ExportError(f"{self.what} returned {len(actual)} outputs, the eager model {len(expected)}")
        for e, a in zip(expected, actual):
            e_np = e.detach().float().cpu().numpy()
            a_np = np.asarray(a.detach().float().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float32)
            if e_np.shape != a_np.shape:
                raise ExportError(f"{self.what} output shape {a_np.shape} != eager shape {e_np.shape}")
            if not e_np.size:
                continue
            gap = np.abs(e_np - a_np)
            diff, excess = float(np.max(gap)), float(np.max(gap - self.rtol * np.abs(e_np)))
            if not (np.isfinite(diff) and np.isfinite(excess)):  # NaN must fail, not slip through `<=`
                diff = excess = float("inf")
            self.worst, self.excess = max(self.worst, diff), max(self.excess, excess)

    @property
    def ok(self) -> bool:
        return self.excess <= self.atol

    def require(self, reference: str) -> float:
        """`worst`, or ExportError when some element is further from `reference` than the tolerance."""
        if not self.ok:
            raise ExportError(
                f"{self.what} logits differ from {reference} by {self.worst:.3g} (more than atol {self.atol:g} "
                f"+ rtol {self.rtol:g} x |{reference}|)"
            )
        return self.worst


def _deployable(model: nn.Module, fold: bool) -> tuple[nn.Module, int]:
    """The module to serialize: the BN-folded copy when asked and possible, else `model` itself;
    either with `padding="same"` written out as numbers (`_explicit_same_padding`)."""
    graph, folded = model, 0
    if fold:
        from prunus.deploy.fold import FoldError, fold_bn

        with contextlib.suppress(FoldError):  # not fx-traceable: still exportable by tracing, without the fold
            graph, folded = fold_bn(model)
    return _explicit_same_padding(graph, copied=graph is not model), folded


def _same_padding(conv: nn.modules.conv._ConvNd) -> tuple[int, ...] | None:
    """The numeric padding `padding="same"` amounts to, when it is the same on both sides of every dim."""
    if conv.padding != "same" or conv.padding_mode != "zeros":  # other modes pad by F.pad already
        return None
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    return None if any(t % 2 for t in totals) else tuple(t // 2 for t in totals)


def _explicit_same_padding(model: nn.Module, *, copied: bool) -> nn.Module:
    """`model` with each `padding="same"` conv's padding as numbers (a copy, unless `copied` says it is one).

    torch.onnx writes "same" as auto_pad=SAME_UPPER, which onnxruntime refuses with a dilation
    (a TCN's dilated convs: "Dilation not supported for AutoPadType::SAME_UPPER"). Numbers give
    the same output; an odd total (an even kernel) pads one more on one side and is left as it is.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd) and _same_padding(m)]
    if not names:
        return model
    if not copied:
        model = copy.deepcopy(model)
    for name in names:
        conv = model.get_submodule(name)
        conv.padding = _same_padding(conv)
    return model


def _require(module: str, purpose: str) -> Any:
    return require(module, "export", purpose)


def ort_session(model: bytes | str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU `InferenceSession` for ONNX bytes or a file path.

    Args:
        model: Serialized ONNX model, or the path of an .onnx file.
        threads: Intra-op threads; None lets onnxruntime choose (all cores).

    Example:
        >>> sess = ort_session(onnx_bytes(torch.nn.Linear(3, 2), torch.zeros(1, 3)))
        >>> sess.run(None, {"input": np.zeros((5, 3), np.float32)})[0].shape
        (5, 2)
    """
    ort = _require("onnxruntime", "running ONNX")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)  # 0 = onnxruntime's default
    opts.inter_op_num_threads = 1  # the CNNs here are a single chain; parallel branches buy nothing
    # every graph rewrite onnxruntime has (constant folding, conv+BN/activation fusion, layout
    # transforms); ENABLE_ALL is its default today, stated so that a changed default cannot slow us
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own un-exported exception types
        raise ExportError(f"onnxruntime cannot load the exported model: {exc}") from exc


def _pool_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in): row i averages adaptive pooling's bin i, [floor(i n_in / n_out), ceil((i+1) n_in / n_out))."""
    rows = []
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-(i + 1) * n_in // n_out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(n_in)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


class _AdaptivePoolAsMatmul(torch.overrides.TorchFunctionMode):
    """During ONNX export: an adaptive average pool whose output size does not divide its input size
    (timm's VGG head pools a 2x2 map to 7x7 at small inputs) becomes two matmuls with constant bin
    matrices. The exporter has no translation for that case; the matmuls compute the same averages.
    The input's spatial size is fixed in the file anyway (only the batch axis is dynamic).
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        rank = _ADAPTIVE_AVG_POOLS.get(func)
        if rank is not None:
            x = args[0]
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            size = (size,) * rank if isinstance(size, int) else tuple(size)
            ins = tuple(x.shape[-rank:])
            outs = tuple(i if o is None else o for o, i in zip(size, ins, strict=True))
            if any(i % o for i, o in zip(ins, outs, strict=True)):
                y = torch.matmul(x, _pool_matrix(ins[-1], outs[-1], x).t())  # the last axis
                if rank == 2:
                    y = torch.matmul(_pool_matrix(ins[0], outs[0], x), y)
                return y
        return func(*args, **kwargs)


_ADAPTIVE_AVG_POOLS = {torch.nn.functional.adaptive_avg_pool1d: 1, torch.nn.functional.adaptive_avg_pool2d: 2}


def onnx_bytes(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> bytes:
    """Serialize `model` (in eval mode) to ONNX in memory, without checking it.

    Args:
        model: Any nn.Module taking tensors and returning a tensor or tuple of tensors.
        example_inputs: One tensor, or a tuple for models with several inputs.
        opset: ONNX opset version.
        dynamic_batch: Make dimension 0 of every input and output symbolic.

    Returns:
        The serialized ModelProto.

    Raises:
        ExportError: The model uses an operator the exporter cannot translate.
        MissingDependencyError: onnx is not installed.

    Example:
        >>> data = onnx_bytes(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        >>> len(data) > 0
        True
    """
    _require("onnx", "exporting to ONNX")  # the exporter imports it late, after tracing the model
    inputs = _as_tuple(example_inputs)
    in_names = [INPUT_NAME] if len(inputs) == 1 else [f"{INPUT_NAME}{i}" for i in range(len(inputs))]
    with _eval_mode(model), torch.no_grad():
        n_out = len(_outputs(model(*inputs)))
        out_names = [OUTPUT_NAME] if n_out == 1 else [f"{OUTPUT_NAME}{i}" for i in range(n_out)]
        axes = {name: {0: "batch"} for name in in_names + out_names} if dynamic_batch else None
        buf = io.BytesIO()
        try:
            with _quiet_deprecations(), _native_stdout_silenced(), _AdaptivePoolAsMatmul():
                torch.onnx.export(
                    _positional(model),
                    inputs,
                    buf,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_axes=axes,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        except Exception as exc:  # exporter errors come as OnnxExporterError, RuntimeError, TypeError...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"cannot export {type(model).__name__} to ONNX (opset {opset}): {first}") from exc
    return _mark_onnx(buf.getvalue())


class _Positional(nn.Module):
    """Calls the model with the example's tensors only: torch.onnx's tracer fills every further
    parameter of a forward from its default, positionally, which a keyword-only one refuses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.model(*inputs)


def _positional(model: nn.Module) -> nn.Module:
    """`model`, wrapped in `_Positional` when its forward has keyword-only parameters."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or C forward: no signature to read
        return model
    return _Positional(model) if any(p.kind is p.KEYWORD_ONLY for p in params) else model


def _mark_onnx(data: bytes) -> bytes:
    """The model with `metadata_props["prunus"] = version`: how `--force` knows prunus wrote the file."""
    import onnx

    from prunus._version import __version__

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = WRITER_KEY, __version__
    return proto.SerializeToString()


def _check_onnx(
    model: nn.Module, data: bytes, batches: list[tuple[torch.Tensor, ...]], atol: float, rtol: float
) -> tuple[float, tuple[int, ...]]:
    try:
        sess = ort_session(data)
    except ExportError as exc:
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()} - {"float32"})
        if dtypes and "NOT_IMPLEMENTED" in str(exc):  # onnxruntime's CPU kernels are float32 for most ops
            raise ExportError(
                f"{first_line(exc)} (the model's weights are {', '.join(dtypes)}; onnxruntime's CPU kernels "
                "are float32: export model.float())"
            ) from exc
        raise
    names = [i.name for i in sess.get_inputs()]
    agreement = _Agreement("ONNX", atol, rtol)
    with _eval_mode(model), torch.no_grad():
        for inputs in batches:
            expected = _outputs(model(*inputs))
            feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}
            try:
                got = sess.run(None, feed)
            except Exception as exc:
                raise ExportError(f"onnxruntime failed at batch {inputs[0].shape[0]}: {exc}") from exc
            agreement.add(expected, got)
    return agreement.require("torch"), tuple(int(b[0].shape[0]) for b in batches)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    fold_bn: bool = True,
) -> ExportResult:
    """Export `model` to an ONNX file and check it with onnxruntime.

    The file is written atomically. With `check`, onnxruntime (CPU) runs it on `example_inputs`
    and, when `dynamic_batch`, on a second batch size; the logits must match the eager model's.

    Args:
        model: The model; it is exported in eval mode and left in the mode it came in.
        path: Output file (parent directories are created).
        example_inputs: One tensor (N, C, H, W) or a tuple of tensors.
        opset: ONNX opset version.
        dynamic_batch: Make the batch axis symbolic.
        check: Run the file in onnxruntime and compare with torch.
        atol, rtol: Every output element must satisfy |onnxruntime - torch| <= atol + rtol * |torch|
            (the `numpy.isclose` rule; NaN fails).
        fold_bn: Export the BN-folded copy (`prunus.deploy.fold.fold_bn`); checked against `model`.

    Returns:
        ExportResult with the path, file size, max_abs_diff and folded_bn.

    Raises:
        ExportError: Unsupported operator, or logits differ by more than the tolerance (then nothing
            is written to `path`).
        MissingDependencyError: onnx is not installed, or `check` is on and onnxruntime is not.

    Example:
        >>> import tempfile, pathlib
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
        >>> res = export_onnx(net, pathlib.Path(tempfile.mkdtemp()) / "m.onnx", torch.randn(2, 1, 8, 8))
        >>> res.max_abs_diff < 1e-4, res.checked_batches
        (True, (2, 4))
    """
    if check:
        _require("onnxruntime", "checking the ONNX file")  # fail before the (slow) export, not after
    inputs = _as_tuple(example_inputs)
    model = unwrap_parallel(model)  # torch.onnx refuses DataParallel; the module inside computes the same
    graph, folded = _deployable(model, fold_bn)
    start = time.perf_counter()
    log.info("ONNX export: converting %s (opset %d) ...", type(model).__name__, opset)
    data = onnx_bytes(graph, inputs, opset=opset, dynamic_batch=dynamic_batch)
    diff, checked = None, ()
    if check:
        batches = [inputs, _other_batch(inputs)] if dynamic_batch else [inputs]
        log.info("ONNX export: checking in onnxruntime at batch %s (%.1f s so far)",
                 " and ".join(str(b[0].shape[0]) for b in batches), time.perf_counter() - start)  # fmt: skip
        diff, checked = _check_onnx(model, data, batches, atol, rtol)
    # Check first, write second: a file on disk is always a verified one.
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    path = Path(path)
    return ExportResult(path, "onnx", path.stat().st_size, diff, checked, folded)


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    check: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    fold_bn: bool = True,
) -> ExportResult:
    """Trace `model` to TorchScript, save it atomically, reload it and compare the logits.

    Tracing (not scripting) works on any model whose forward has no data-dependent control
    flow, which holds for the CNNs prunus prunes. The reloaded module is compared with the eager
    model on `example_inputs` and on a second batch size.

    Args:
        model: The model; traced in eval mode and left in the mode it came in.
        path: Output file, conventionally `.pt`.
        example_inputs: One tensor or a tuple of tensors.
        check: Reload with `torch.jit.load` and compare with the eager model.
        atol, rtol: Every output element must satisfy |reloaded - eager| <= atol + rtol * |eager|.
        fold_bn: Trace the BN-folded copy (`prunus.deploy.fold.fold_bn`); checked against `model`.

    Returns:
        ExportResult with the path, file size, max_abs_diff and folded_bn.

    Raises:
        ExportError: Tracing failed, or the reloaded module differs by more than the tolerance (then
            the file is not left at `path`).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
        >>> res = export_torchscript(torch.nn.Linear(3, 2), out, torch.zeros(1, 3))
        >>> res.max_abs_diff <= 1e-5
        True
    """
    inputs = _as_tuple(example_inputs)
    diff, checked = None, ()
    model = unwrap_parallel(model)
    graph, folded = _deployable(model, fold_bn)
    start = time.perf_counter()
    log.info("TorchScript export: tracing %s ...", type(model).__name__)
    with _eval_mode(model), torch.no_grad(), _quiet_deprecations():
        try:
            # check_trace would re-run the model; our own comparison below covers it and more.
            traced = torch.jit.trace(graph, inputs, check_trace=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"cannot trace {type(model).__name__} to TorchScript: {first}") from exc
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_MARKER: _marker_json()})
            if check:
                loaded = torch.jit.load(str(tmp))
                agreement = _Agreement("TorchScript", atol, rtol)
                batches = [inputs, _other_batch(inputs)]
                log.info("TorchScript export: checking the reloaded module at batch %s (%.1f s so far)",
                         " and ".join(str(b[0].shape[0]) for b in batches), time.perf_counter() - start)  # fmt: skip
                for batch in batches:
                    agreement.add(_outputs(model(*batch)), _outputs(loaded(*batch)))
                diff = agreement.require("eager")  # raising inside atomic_path removes the temp file
                checked = tuple(int(b[0].shape[0]) for b in batches)
    path = Path(path)
    return ExportResult(path, "torchscript", path.stat().st_size, diff, checked, folded)
