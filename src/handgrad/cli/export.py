"""``handgrad export``: a saved model as an ONNX file, for onnxruntime and the rest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from handgrad._install import install_hint
from handgrad.cli._common import CommandError, check_output_file, input_features

EXPORT_EPILOG = """\
examples:
  handgrad export mnist-mlp.npz mnist-mlp.onnx            # input "input" (N, 784)
  handgrad export mnist-cnn.npz mnist-cnn.onnx            # the recipes take (N, 784) too
  handgrad export net.npz net.onnx --input-shape 1,28,28  # a net that starts with a Conv2d

The file holds the model as it computes in evaluation mode: dropout is the identity,
batch norm uses its running statistics. Its input is named "input" (batch axis dynamic),
its output "output": raw scores (logits), as handgrad's model(x) gives them. Images go in
as handgrad.train.predict feeds them: uint8 pixels divided by 255, in the model's dtype.
Needs the onnx package: pip install "handgrad[onnx]".
"""


def _shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` -> ``(1, 28, 28)``: positive sizes, comma-separated."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected the shape of one sample as positive sizes separated by commas, "
            f"such as 784 or 1,28,28, got {text!r}"
        )
    return sizes


def add_export_parser(sub: Any) -> None:
    """Register ``handgrad export`` on the command line's subparsers."""
    p = sub.add_parser(
        "export",
        help="write a saved model as an ONNX file (for onnxruntime and other runtimes)",
        description="Write a model saved by handgrad as an ONNX file (opset 17), to run\n"
        "it in onnxruntime or any other ONNX runtime.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="a model saved by handgrad train (or handgrad.save)")
    p.add_argument("output", type=Path, help="the ONNX file to write, e.g. model.onnx")
    p.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        metavar="SHAPE",
        help="shape of one sample without the batch axis, e.g. 784 or 1,28,28 (default: "
        "the number of input features the model's first Linear or Unflatten takes, such "
        "as 784; needed for a network that starts with a Conv2d)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="dtype of the graph's input, output and weights (default: the model's)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from handgrad.onnx import OPSET, ExportError, export
    from handgrad.serialization import load

    try:  # a missing package is said before any work
        import onnx
    except ImportError:
        raise CommandError(
            f"handgrad export needs the onnx package, which is not installed: "
            f"{install_hint('onnx')}"
        ) from None
    check_output_file(args.output, "output", "model.onnx")
    if args.output.resolve() == args.model.resolve():
        raise CommandError(f"{args.output} is the model file itself: give another output file")
    model = load(args.model)
    shape = args.input_shape
    if shape is None:
        n = input_features(model)
        if n is None:
            raise CommandError(
                "the model does not fix the size of its input (a network that starts with "
                "a convolution takes images of any size): give the shape of one sample "
                "with --input-shape, e.g. --input-shape 1,28,28"
            )
        shape = (n,)
    try:
        export(model, args.output, shape, args.dtype)
    except ExportError as exc:
        raise CommandError(f"{args.model}: {exc}") from None
    graph = onnx.load(str(args.output)).graph
    tensor = graph.input[0].type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    dims = [d.dim_param or str(d.dim_value) for d in graph.output[0].type.tensor_type.shape.dim]
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1024:,.0f} KB, ONNX opset {OPSET}): "
        f"input 'input' (N, {', '.join(map(str, shape))}) {dtype} -> "
        f"output 'output' ({', '.join(dims)}); operators "
        f"{', '.join(sorted({node.op_type for node in graph.node}))}"
    )
    return 0
