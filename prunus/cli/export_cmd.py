"""`prunus export`: write a saved model as ONNX, TorchScript or OpenVINO IR, checked against the eager model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input, print_table
from prunus.config import check_choice
from prunus.errors import ConfigError, PrunusError
from prunus.formats.outputs import check_output
from prunus.formats.run_dir import RunDir, resolve_model_dir

__all__ = ["FORMATS", "add_model_args", "add_parser", "load_model", "parse_ints", "run"]

# ONNX opsets the exporter writes and onnxruntime reads (torch 2.x: 7 to 20)
MIN_OPSET, MAX_OPSET = 7, 20
# format -> where its file goes by default: next to the model (`RunDir.onnx` / `.torchscript` / `.openvino`)
FORMATS: dict[str, str] = {"onnx": "onnx", "torchscript": "torchscript", "openvino": "openvino"}


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """Parse a comma-separated list of positive integers ("1,16,64"); ConfigError naming `flag` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return values


def load_model(args: argparse.Namespace) -> tuple[Any, tuple[int, ...]]:
    """Load `args.model_dir` (a model or run directory, or a .prn file) and resolve its input shape
    (--input-shape overrides the one the file records)."""
    model_dir = Path(args.model_dir)
    is_prn = model_dir.suffix == ".prn" and model_dir.is_file()
    if not (model_dir.is_dir() or is_prn):
        raise PrunusError(f"model directory not found: {model_dir}")
    from prunus.compress import load
    from prunus.models.info import get_info

    model = load(model_dir, trust_factory=args.trust_factory)
    if args.input_shape:
        shape = parse_ints(args.input_shape, "--input-shape")
    else:
        shape = get_info(model).input_shape
    if not shape:
        raise ConfigError(f"{model_dir} records no input shape; pass --input-shape C,H,W (or C,L or C,D,H,W)")
    if not all(isinstance(s, int) for s in shape):  # a tuple or dict of shapes: a model with several inputs
        raise ConfigError(
            f"{model_dir} takes several inputs ({shape}); prunus export and bench handle models with one input "
            "(the Python API's prunus.deploy.export_onnx takes a tuple of example inputs)"
        )
    if args.input_shape:
        check_input_fits(model, shape, "--input-shape")
    return model, shape


def check_input_fits(model: Any, shape: tuple[int, ...], flag: str) -> None:
    """ConfigError unless one example of `shape` is within the size limit and goes through `model`."""
    from prunus.deploy.bench import check_fits
    from prunus.errors import CorruptFileError
    from prunus.formats.limits import check_input_shape

    try:
        check_input_shape(list(shape), f"{flag} {','.join(map(str, shape))}")
    except CorruptFileError as exc:
        raise ConfigError(str(exc)) from None
    check_fits([model], shape, f"{flag} {','.join(map(str, shape))}")  # the one forward check bench uses too


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by commands that load one saved model directory."""
    mark_input(
        parser.add_argument(
            "model_dir",
            metavar="MODEL",
            help="a saved model directory (model.json + weights), a run holding one, or a .prn",
        )
    )
    parser.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="one sample's shape (C,H,W; or C,L, C,D,H,W); default: the one in model.json",
    )
    parser.add_argument(
        "--trust-factory", action="store_true", help="allow importing the user factory named in model.json"
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `prunus export`."""
    parser = add_command(
        subparsers,
        "export",
        "Export a saved model to ONNX, TorchScript or OpenVINO IR and check the file reproduces its logits.",
        "prunus export runs/r20/model --format onnx --out r20.onnx",
    )
    add_model_args(parser)
    # No argparse `choices`: a bad name goes through ConfigError, one line listing the formats.
    parser.add_argument("--format", default="onnx", help=f"one of: {', '.join(FORMATS)} (default: onnx)")
    add_output_arg(
        parser,
        "--out",
        "file",
        metavar="PATH",
        help="output file (default: MODEL_DIR/model.onnx, model.pt, or model.xml + model.bin for openvino)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    parser.add_argument("--no-check", action="store_true", help="skip running the file and comparing logits")
    parser.add_argument(
        "--no-fold-bn",
        action="store_true",
        help="keep BatchNorms separate (default: fold each into the conv before it)",
    )
    parser.set_defaults(run=run)
    return parser


def _default_out(source: Path, fmt: str) -> Path:
    """Next to the model: MODEL_DIR/model.onnx (`RunDir.onnx`), or X.onnx beside a compressed X.prn."""
    export = getattr(RunDir(resolve_model_dir(source)), FORMATS[fmt])
    return source.with_suffix(export.suffix) if source.suffix == ".prn" else export


def run(args: argparse.Namespace) -> int:
    """Export the model; print what was written and how closely it matches."""
    check_choice("--format", args.format, FORMATS)
    if not MIN_OPSET <= args.opset <= MAX_OPSET:  # before the exporter runs (and prints its own warnings)
        raise ConfigError(f"--opset {args.opset} is not valid; expected {MIN_OPSET} to {MAX_OPSET}")
    import torch

    from prunus.deploy.export import export_onnx, export_torchscript

    out = Path(args.out) if args.out else _default_out(Path(args.model_dir), args.format)
    if not args.out:  # the default lies inside the (input) model directory: still never over a foreign file
        check_output(out, "file", force=args.force, flag="default output")
    if args.format == "openvino":
        if out.suffix != ".xml":
            raise ConfigError(f"--out {out} must end in .xml for --format openvino (the weights go to NAME.bin)")
        # the weights file is an output too: it may not overlap the model nor replace a file without --force
        check_output(out.with_suffix(".bin"), "file", force=args.force, sources=[args.model_dir], flag="weights file")
        from prunus.deploy.openvino_ir import require_openvino

        require_openvino()  # one line naming the extra, before loading the model
    model, shape = load_model(args)
    example = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
    if args.format == "onnx":
        result = export_onnx(
            model, out, example, opset=args.opset, check=not args.no_check, fold_bn=not args.no_fold_bn
        )
    elif args.format == "openvino":
        from prunus.deploy.openvino_ir import export_openvino

        result = export_openvino(model, out, example, check=not args.no_check, fold_bn=not args.no_fold_bn)
    else:
        result = export_torchscript(model, out, example, check=not args.no_check, fold_bn=not args.no_fold_bn)
    diff = "unchecked" if result.max_abs_diff is None else f"{result.max_abs_diff:.2e}"
    batches = ",".join(map(str, result.checked_batches)) or "-"
    print_table(
        f"prunus export {args.model_dir}",
        ["format", "bytes", "max |file - eager|", "checked batches", "BNs folded"],
        [[result.format, result.bytes, diff, batches, result.folded_bn]],
    )
    print(f"wrote {result.path}")  # outside the table: rich would wrap a long path
    if result.format == "openvino":
        print(f"wrote {result.path.with_suffix('.bin')}")
    return 0
