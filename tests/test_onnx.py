"""ONNX export: every exported file runs in onnxruntime and gives handgrad's outputs.

Each model is exported, loaded by onnxruntime (CPU) and run on the same batch as
handgrad's own forward pass in evaluation mode: float32 within ``F32`` (outputs of
order 1-10, so about 1e-6 relative), float64 within ``F64``. Tests that need onnx or
onnxruntime are skipped, with the reason, where they are not installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handgrad import nn
from handgrad.cli import main
from handgrad.data import load_mnist
from handgrad.nn.module import Module
from handgrad.recipes import build_cnn, build_lenet, build_mlp
from handgrad.serialization import save

ROOT = Path(__file__).resolve().parents[1]
F32 = {"rtol": 1e-5, "atol": 2e-5}
F64 = {"rtol": 1e-12, "atol": 1e-12}


def _ort() -> Any:
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (the onnx extra)")
    return pytest.importorskip("onnxruntime", reason="running ONNX files needs onnxruntime")


def _session(source: Any) -> Any:
    ort = _ort()
    data = source.SerializeToString() if hasattr(source, "SerializeToString") else str(source)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _check(
    model: Module,
    x: np.ndarray,
    tol: dict[str, float] | None = None,
    dtype: Any = None,
    tmp_path: Path | None = None,
) -> float:
    """Export ``model``, run the file on ``x`` and on a one-sample batch, compare with
    handgrad in eval mode; return the largest absolute difference."""
    _ort()
    from handgrad.onnx import export, to_onnx

    if tmp_path is None:
        session = _session(to_onnx(model, x.shape[1:], dtype))
    else:
        session = _session(export(model, tmp_path / "model.onnx", x.shape[1:], dtype))
    training = model.training
    model.eval()
    worst = 0.0
    for batch in (x, x[:1]):  # the batch axis is dynamic
        expected = model(batch)
        (got,) = session.run(None, {"input": batch if dtype is None else batch.astype(dtype)})
        assert got.dtype == (expected.dtype if dtype is None else np.dtype(dtype))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **(tol or F32))
        worst = max(worst, float(np.abs(got - expected).max()))
    model.train(training)
    return worst


def _warm_up(
    model: Module, shape: tuple[int, ...], rng: np.random.Generator, dtype: Any = np.float32
) -> None:
    """Give every batch norm running statistics far from (0, 1), and every normalisation
    random affine parameters, so that an export that ignored them would fail."""
    model.train()
    for _ in range(5):
        model(rng.normal(1.5, 3.0, size=(16, *shape)).astype(dtype))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
            for p in (m.weight, m.bias):
                if p is not None:
                    p.data = rng.uniform(0.5, 2.0, p.shape).astype(dtype)
    model.eval()


def _mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_mnist()
    return data.x_test[:n], data.y_test[:n]


# -- the recipes ----------------------------------------------------------------------------


def test_default_mlp_recipe_matches(tmp_path: Path) -> None:
    model = build_mlp(784, [128], 10, rng=0)  # handgrad train's 784-128-10
    x, _ = _mnist(64)
    _check(model, x.reshape(64, -1).astype(np.float32) / 255, tmp_path=tmp_path)


@pytest.mark.parametrize("recipe", [build_lenet, build_cnn], ids=["lenet", "cnn"])
def test_convolutional_recipes_match(recipe: Any, rng: np.random.Generator) -> None:
    model = recipe((28, 28), 10, rng=0)
    _warm_up(model, (784,), rng)
    x = _mnist(32)[0].reshape(32, -1).astype(np.float32) / 255
    _check(model, x)


def test_the_exported_model_is_in_eval_mode_and_the_model_is_untouched(
    rng: np.random.Generator,
) -> None:
    from handgrad.onnx import to_onnx

    model = build_mlp(20, [16], 4, dropout=0.5, batch_norm=True, rng=0)
    _warm_up(model, (20,), rng)
    model.train()  # exported as in eval mode all the same
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = rng.normal(size=(8, 20)).astype(np.float32)
    _check(model, x)
    to_onnx(model, (20,))
    assert model.training and all(m.training for m in model.modules())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


# -- every activation, in float32 and float64 ---------------------------------------------

ACTIVATIONS = {
    "ReLU": nn.ReLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.2),
    "ELU": lambda: nn.ELU(0.7),
    "SELU": nn.SELU,
    "GELU": nn.GELU,
    "GELU-tanh": lambda: nn.GELU(approximate="tanh"),
    "SiLU": nn.SiLU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Softmax": lambda: nn.Softmax(dim=-1),
    "Softmax-dim1": lambda: nn.Softmax(dim=1),
    "LogSoftmax": lambda: nn.LogSoftmax(dim=-1),
    "LogSoftmax-dim1": lambda: nn.LogSoftmax(dim=1),
}
# onnxruntime's CPU provider has no double kernel for these operators (Erf: exact GELU)
NO_DOUBLE_IN_ORT = {"GELU"}


def test_every_activation_has_a_case() -> None:
    from handgrad.nn import activations

    classes = {
        c.__name__
        for c in vars(activations).values()
        if isinstance(c, type) and c.__module__ == activations.__name__ and c.__name__[0] != "_"
    }
    assert len(classes) == 10 and classes <= {name.split("-")[0] for name in ACTIVATIONS}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_matches(name: str, dtype: type, rng: np.random.Generator) -> None:
    if dtype is np.float64 and name in NO_DOUBLE_IN_ORT:
        pytest.skip(f"onnxruntime has no float64 kernel for {name} (the file is valid ONNX)")
    model = nn.Sequential(nn.Linear(6, 5, rng=0, dtype=dtype), ACTIVATIONS[name]()).to(dtype)
    x = rng.normal(0, 3, size=(9, 4, 6)).astype(dtype)  # (N, 4, 6): Linear as MatMul + Add
    _check(model, x, F32 if dtype is np.float32 else F64)
    flat = nn.Sequential(nn.Linear(6, 5, rng=1, dtype=dtype), ACTIVATIONS[name]()).to(dtype)
    if name.endswith("dim1"):
        return
    _check(flat, x[:, 0], F32 if dtype is np.float32 else F64)  # (N, 6): Gemm


def test_a_float64_model_exports_as_float32_on_request(rng: np.random.Generator) -> None:
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1), nn.GELU(), nn.Flatten()
    ).to(np.float64)
    x = rng.normal(size=(5, 64))
    _check(model, x, {"rtol": 1e-5, "atol": 1e-5}, dtype=np.float32)


# -- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: nn.BatchNorm1d(6), (6,)),
        (lambda: nn.BatchNorm1d(4), (4, 5)),  # (N, C, L)
        (lambda: nn.BatchNorm1d(6, affine=False), (6,)),
        (lambda: nn.BatchNorm2d(3), (3, 5, 4)),
        (lambda: nn.BatchNorm2d(3, momentum=None), (3, 5, 4)),
        (lambda: nn.BatchNorm2d(3, track_running_stats=False), (3, 5, 4)),
        (lambda: nn.LayerNorm(5), (4, 5)),
        (lambda: nn.LayerNorm((4, 5)), (4, 5)),
        (lambda: nn.LayerNorm(5, elementwise_affine=False), (4, 5)),
        (lambda: nn.LayerNorm(5, bias=False), (5,)),
    ],
    ids=[
        *("bn1d", "bn1d-ncl", "bn1d-noaffine", "bn2d", "bn2d-cma", "bn2d-batchstats"),
        *("ln", "ln-2d", "ln-noaffine", "ln-nobias"),
    ],
)
def test_normalisation_matches(
    layer: Any, shape: tuple[int, ...], dtype: type, rng: np.random.Generator
) -> None:
    model = nn.Sequential(layer()).to(dtype)
    _warm_up(model, shape, rng, dtype)
    bn = model[0]
    if isinstance(bn, nn.BatchNorm1d) and bn.track_running_stats:
        mean, var = bn._buffers["running_mean"], bn._buffers["running_var"]
        assert np.abs(mean).min() > 0.1 and np.abs(var - 1).min() > 0.5, (mean, var)
    x = rng.normal(1.0, 2.0, size=(7, *shape)).astype(dtype)
    _check(model, x, F32 if dtype is np.float32 else F64, dtype=dtype)  # LayerNorm(5, False)
    # has no array to take its dtype from


# -- convolution and pooling ----------------------------------------------------------------

CONVS = {
    "plain": lambda: nn.Conv2d(3, 4, 3),
    "no-bias": lambda: nn.Conv2d(3, 4, 3, bias=False),
    "stride-pad": lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2)),
    "same-odd": lambda: nn.Conv2d(3, 4, 3, padding="same"),
    "same-even": lambda: nn.Conv2d(3, 4, (4, 2), padding="same"),  # extra pixel bottom/right
    "same-dilated": lambda: nn.Conv2d(3, 4, 3, padding="same", dilation=2),
    "dilation": lambda: nn.Conv2d(3, 4, 3, dilation=(2, 3), stride=2),
    "groups": lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1),
    "depthwise": lambda: nn.Conv2d(4, 4, 3, groups=4),
    "1x1": lambda: nn.Conv2d(3, 5, 1),
}


@pytest.mark.parametrize("name", CONVS)
def test_conv2d_matches(name: str, rng: np.random.Generator) -> None:
    conv = CONVS[name]()
    if conv.bias is not None:
        conv.bias.data = rng.normal(size=conv.bias.shape).astype(np.float32)
    x = rng.normal(size=(3, conv.in_channels, 11, 9)).astype(np.float32)
    _check(nn.Sequential(conv), x)


POOLS = {
    "max": lambda: nn.MaxPool2d(2),
    "max-odd-size": lambda: nn.MaxPool2d(3, stride=2),
    "max-padding": lambda: nn.MaxPool2d(3, stride=2, padding=1),  # pads with -inf
    "max-dilation": lambda: nn.MaxPool2d(2, stride=1, dilation=2),
    "max-rect": lambda: nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1)),
    "avg": lambda: nn.AvgPool2d(2),
    "avg-pad-counted": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "avg-pad-uncounted": lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    "avg-divisor": lambda: nn.AvgPool2d(2, padding=1, divisor_override=3),
    "global": lambda: nn.AdaptiveAvgPool2d(1),
    "adaptive-equal-bins": lambda: nn.AdaptiveAvgPool2d((2, 3)),
    "adaptive-unequal-bins": lambda: nn.AdaptiveAvgPool2d((3, 4)),
    "adaptive-none": lambda: nn.AdaptiveAvgPool2d((None, 1)),
}


@pytest.mark.parametrize("name", POOLS)
def test_pooling_matches(name: str, rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 2, 10, 9)).astype(np.float32)
    x[0, 0] = -5.0  # a channel below zero everywhere: the padding must be -inf, not 0
    if name == "adaptive-equal-bins":
        x = x[:, :, :8, :9]
    _check(nn.Sequential(POOLS[name]()), x)


def test_a_mixed_nested_network_matches(rng: np.random.Generator, tmp_path: Path) -> None:
    model = nn.Sequential(
        nn.Unflatten(1, (2, 6, 6)),
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.SiLU()),
        nn.Dropout2d(0.3),
        nn.Sequential(nn.Identity(), nn.Sequential(nn.AvgPool2d(2), nn.ELU())),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(36, 10, rng=1),
        nn.LayerNorm(10),
        nn.LeakyReLU(),
        nn.Linear(10, 3, rng=2),
        nn.LogSoftmax(dim=1),
    )
    _warm_up(model, (72,), rng)
    _check(model, rng.normal(size=(6, 72)).astype(np.float32), tmp_path=tmp_path)
    onnx = pytest.importorskip("onnx")
    names = {t.name for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer}
    assert {"1.0.weight", "1.1.running_var", "6.weight", "7.bias"} <= names  # state-dict names


def test_single_layers_and_pass_through_models_export(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 7)).astype(np.float32)
    _check(nn.Linear(7, 3, rng=0), x)  # a bare layer, not in a Sequential
    _check(nn.Sequential(nn.Dropout(0.5), nn.Identity()), x)  # no operator but Identity
    _check(nn.Sequential(), x)


# -- what cannot be exported ----------------------------------------------------------------


class Scale(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        return 2 * x


class MyBlock(nn.Sequential):
    """A subclass: it may compute anything, so it is not taken for a Sequential."""


def test_unexportable_layers_are_named_with_their_path(tmp_path: Path) -> None:
    _ort()
    from handgrad.onnx import ExportError, export

    model = nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), Scale(), nn.Sequential(nn.ReLU(), MyBlock())
    )
    with pytest.raises(ExportError, match=r"layer 3: Scale, 4\.1: MyBlock \(ONNX export knows"):
        export(model, tmp_path / "m.onnx", (4,))
    assert not any(tmp_path.iterdir())  # nothing written, not even a temporary file
    with pytest.raises(ExportError, match=r"for layer Scale \("):
        export(Scale(), tmp_path / "m.onnx", (4,))


def test_an_input_shape_that_does_not_fit_names_the_layer(tmp_path: Path) -> None:
    _ort()
    from handgrad.onnx import ExportError, export

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    fits = r"input_shape \(28, 27\) does not fit layer 1: Linear, which would get samples of "
    with pytest.raises(ExportError, match=fits + r"shape \(756,\)"):
        export(model, tmp_path / "m.onnx", (28, 27))
    for bad in [(), (0, 3), (None, 784), 784.0]:
        with pytest.raises(ExportError, match="shape of one sample"):
            export(model, tmp_path / "m.onnx", bad)  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="splits the batch axis"):
        export(nn.Sequential(nn.Unflatten(-2, (1, 1))), tmp_path / "m.onnx", (3,))
    with pytest.raises(ExportError, match="float32 or float64"):
        export(model, tmp_path / "m.onnx", (784,), dtype=np.float16)
    assert not any(tmp_path.iterdir())


def test_the_file_is_valid_onnx_at_the_stated_opset(tmp_path: Path) -> None:
    _ort()
    import onnx

    from handgrad.onnx import IR_VERSION, OPSET, export

    export(build_mlp(784, [32], 10, rng=0), tmp_path / "m.onnx", 784)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert proto.ir_version == IR_VERSION and proto.producer_name == "handgrad"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (inp, out)]
    assert dims == [["N", 784], ["N", 10]]
    assert [n.op_type for n in proto.graph.node] == ["Flatten", "Gemm", "Relu", "Gemm"]


# -- the command line -------------------------------------------------------------------


def _trained(tmp_path: Path, recipe: Any) -> Path:
    from handgrad.optim import Adam
    from handgrad.train import fit

    data = load_mnist()
    model = recipe()
    x, y = data.x_train[:1500], data.y_train[:1500]
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=3e-3), (x, y), epochs=1, rng=0)
    return save(model, tmp_path / "model.npz")


@pytest.mark.parametrize(
    "recipe",
    [lambda: build_mlp(784, [128], 10, rng=0), lambda: build_cnn((28, 28), 10, rng=0)],
    ids=["mlp", "cnn"],
)
def test_export_command_end_to_end(
    recipe: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ort()
    from handgrad.serialization import load
    from handgrad.train import predict, predict_proba

    model_file = _trained(tmp_path, recipe)
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(model_file), str(onnx_file)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {onnx_file}" in out and "input 'input' (N, 784) float32" in out
    assert "-> output 'output' (N, 10)" in out
    model = load(model_file)
    images, labels = _mnist(50)
    (scores,) = _session(onnx_file).run(None, {"input": images.reshape(50, -1) / np.float32(255)})
    assert np.array_equal(scores.argmax(axis=1), predict(model, images))
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        exp / exp.sum(axis=1, keepdims=True), predict_proba(model, images), atol=1e-6
    )
    assert (scores.argmax(axis=1) == labels).mean() > 0.8  # a trained model, not noise


def test_export_command_input_shape_and_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    _ort()
    conv_first = save(
        nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2, rng=1)),
        tmp_path / "conv.npz",
    )
    argv = ["export", str(conv_first), str(tmp_path / "c.onnx")]
    assert main(argv) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main([*argv, "--input-shape", "1,4,4", "--dtype", "float64"]) == 0
    assert "input 'input' (N, 1, 4, 4) float64" in capsys.readouterr().out
    x = rng.normal(size=(3, 1, 4, 4))
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):  # no double Conv in onnxruntime
        _session(tmp_path / "c.onnx").run(None, {"input": x})
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--input-shape", "1,x"])
    assert exc.value.code == 2
    assert "such as 784 or 1,28,28" in capsys.readouterr().err


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("handgrad export: error: ")
    for needle in needles:
        assert needle in err, err


def test_export_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ort()
    out = str(tmp_path / "m.onnx")
    assert main(["export", str(tmp_path / "missing.npz"), out]) == 2
    _one_line(capsys, "model file not found")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    assert main(["export", str(tmp_path / "junk.npz"), out]) == 2
    _one_line(capsys, "not a handgrad model file")
    assert main(["export", str(tmp_path), out]) == 2
    _one_line(capsys, "is a directory")
    model = save(build_mlp(16, [4], 3, rng=0), tmp_path / "m.npz")
    assert main(["export", str(model), str(tmp_path / "no" / "dir" / "m.onnx")]) == 2
    _one_line(capsys, "does not exist")
    assert main(["export", str(model), str(model)]) == 2
    _one_line(capsys, "is the model file itself")
    assert main(["export", str(model), out, "--input-shape", "5"]) == 2
    _one_line(capsys, "does not fit layer 1: Linear")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.npz", "m.npz"]


def test_missing_onnx_gets_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from handgrad._install import install_command
    from handgrad.onnx import ExportError, export

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    model = save(build_mlp(16, [4], 3, rng=0), tmp_path / "m.npz")
    assert main(["export", str(model), str(tmp_path / "m.onnx")]) == 2
    _one_line(capsys, "needs the onnx package", install_command("onnx"), "(or: pip install onnx)")
    with pytest.raises(ImportError, match=re.escape(install_command("onnx"))):
        export(build_mlp(16, [4], 3, rng=0), tmp_path / "m.onnx", 16)
    assert issubclass(ExportError, ValueError)
    assert not (tmp_path / "m.onnx").exists()


def test_export_help_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("(default: ") == 2 and "handgrad export mnist-mlp.npz" in text


def test_importing_handgrad_does_not_import_onnx() -> None:
    code = (
        "import sys, handgrad, handgrad.nn, handgrad.cli, handgrad.cli.export, handgrad.onnx; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the README ----------------------------------------------------------------------------


def test_readme_export_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ort()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Export to ONNX", 1)[1].split("\n## ", 1)[0]
    assert "| `handgrad export MODEL.npz MODEL.onnx` |" in readme
    (code,) = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(ROOT / "README.md"), "exec"), {})
