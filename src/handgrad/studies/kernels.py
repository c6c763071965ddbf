"""kernels: what a 3x3 convolution and 2x2 max pooling do to an MNIST digit.

Five hand-made kernels go into the weights of one ``nn.Conv2d(1, 5, 3, padding=1)``
and run on a digit in a single forward pass; ``nn.MaxPool2d(2)`` halves it. Both are
checked against the plain loops of ``handgrad.nn.reference``.

- blur (the 3x3 mean) sums to 1, so a flat patch stays the same and strokes spread;
- edge detect (8 in the middle, -1 around it) and the two Sobel kernels sum to 0,
  so a flat patch gives 0 and only changes of brightness answer;
- the horizontal-edge kernel differences the rows above and below a pixel, so it
  answers a horizontal stroke and not a vertical one; the vertical-edge kernel is
  its transpose and does the opposite;
- sharpen is the identity plus edge detect's four-neighbour version: it sums to 1
  and adds the edges back onto the image;
- 2x2 max pooling keeps the largest pixel of each block: a quarter of the pixels,
  the strokes kept, their exact position blurred by a pixel.

The table shows each kernel's answer to three probe images (flat, a horizontal
line, a vertical line), which states the bullets above as numbers. Then a small CNN
(``handgrad.recipes.build_lenet``) trains briefly, and its 32 first-layer filters
are drawn beside the hand-made ones (at initialisation, trained, and applied to the
same digit), with how close the nearest learned filter comes to each edge kernel
(cosine of the zero-mean weights), before and after.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from handgrad import nn, optim
from handgrad.data import load_mnist
from handgrad.nn import reference
from handgrad.recipes import build_lenet
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit

KERNELS: dict[str, np.ndarray] = {
    "edge detect": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float64),
    "blur": np.full((3, 3), 1 / 9),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    "horizontal edges": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "vertical edges": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
}


def conv_layer(kernels: dict[str, np.ndarray]) -> nn.Conv2d:
    """``nn.Conv2d(1, K, 3, padding=1)`` whose K filters are ``kernels``, no bias, float64."""
    conv = nn.Conv2d(1, len(kernels), 3, padding=1, bias=False, dtype=np.float64)
    conv.weight.data[:, 0] = np.stack(list(kernels.values()))  # (K, 1, 3, 3)
    return conv


def apply_kernels(image: np.ndarray, kernels: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Each kernel over ``image`` (zero-padded to keep its size) by ``nn.Conv2d``, and the
    largest difference from the loop reference. Shape: ``(H, W) -> (K, H, W)``."""
    conv = conv_layer(kernels)
    x = image[None, None].astype(np.float64)  # (1, 1, H, W)
    out = conv.forward(x)  # (1, K, H, W)
    loops = reference.conv2d_forward_naive(x, conv.weight.data, None, padding=(1, 1, 1, 1))
    return out[0], float(np.max(np.abs(out - loops)))


def max_pool(image: np.ndarray) -> tuple[np.ndarray, float]:
    """2x2 max pooling by ``nn.MaxPool2d``, and the largest difference from the loop
    reference. Shape: ``(H, W) -> (H/2, W/2)``."""
    x = image[None, None].astype(np.float64)  # (1, 1, H, W)
    out = nn.MaxPool2d(2).forward(x)  # (1, 1, H/2, W/2)
    loops = reference.maxpool2d_forward_naive(x, (2, 2), (2, 2))
    return out[0, 0], float(np.max(np.abs(out - loops)))


def probes(size: int = 9) -> dict[str, np.ndarray]:
    """Three test images: flat, a horizontal line, a vertical line (through the middle)."""
    flat = np.ones((size, size))
    horizontal = np.zeros((size, size))
    horizontal[size // 2] = 1
    return {"flat": flat, "horizontal line": horizontal, "vertical line": horizontal.T.copy()}


def probe_responses(kernels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``response[kernel][probe]``: the largest ``|output|`` over the pixels whose window
    lies inside the probe (so the zero padding plays no part)."""
    out: dict[str, dict[str, float]] = {name: {} for name in kernels}
    for probe, image in probes().items():
        maps, _ = apply_kernels(image, kernels)  # (K, 9, 9)
        for name, m in zip(kernels, maps, strict=True):
            out[name][probe] = float(np.max(np.abs(m[1:-1, 1:-1])))
    return out


def best_cosines(filters: np.ndarray, kernels: dict[str, np.ndarray]) -> dict[str, float]:
    """For each kernel, the largest ``|cosine|`` between its zero-mean weights and those
    of any filter in ``filters (F, 3, 3)``: how close the nearest filter comes in shape."""
    f = filters.reshape(len(filters), -1)
    f = f - f.mean(axis=1, keepdims=True)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    result = {}
    for name, k in kernels.items():
        v = k.ravel() - k.mean()
        v /= np.linalg.norm(v)
        result[name] = float(np.max(np.abs(f @ v)))
    return result


def train_cnn(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], rng: np.random.Generator
) -> dict[str, object]:
    """LeNet (conv 32 3x3 first) trained for one epoch with Adam; its first-layer
    filters before and after, the test accuracy and the time."""
    x, y, x_test, y_test = data
    model = build_lenet(rng=rng)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    before = first.weight.data[:, 0].copy()  # (32, 3, 3)
    loss = nn.CrossEntropyLoss()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(
            model,
            loss,
            optim.Adam(model.parameters(), lr=3e-3),
            (x, y),
            epochs=1,
            batch_size=64,
            rng=rng,
            verbose=0,
        )
    seconds = time.perf_counter() - start
    return {
        "before": before,
        "after": first.weight.data[:, 0].copy(),
        "accuracy": evaluate(model, loss, x_test, y_test)["accuracy"],
        "seconds": seconds,
        "steps": int(np.ceil(len(x) / 64)),
        "stop_reason": history.stop_reason,
    }


def run(ctx: Context) -> Report:
    report = Report("kernels", "Kernels: convolution and max pooling on an MNIST digit")
    rng = ctx.rng()
    mnist = load_mnist()
    index = int(rng.integers(len(mnist.x_test)))
    digit = mnist.x_test[index].astype(np.float64) / 255.0  # (28, 28)

    maps, conv_error = apply_kernels(digit, KERNELS)
    pooled, pool_error = max_pool(digit)
    responses = probe_responses(KERNELS)
    rows = []
    for name, k in KERNELS.items():
        r = responses[name]
        rows.append(
            [
                name,
                " / ".join(" ".join(f"{v:.3g}" for v in row) for row in k),
                f"{k.sum():.3g}",
                f"{r['flat']:.3g}",
                f"{r['horizontal line']:.3g}",
                f"{r['vertical line']:.3g}",
            ]
        )
    report.tables.append(
        Table(
            ["kernel", "weights (rows)", "sum", "flat", "horizontal line", "vertical line"],
            rows,
            "largest |output| on three 9x9 probe images (flat = all ones; the lines are one "
            f"pixel wide); nn.Conv2d = the loop reference to {conv_error:.1e} on the digit",
        )
    )
    report.tables.append(
        Table(
            ["2x2 max pooling", "pixels", "largest pixel", "mean pixel", "max |fast - loops|"],
            [
                ["digit", f"{digit.size}", f"{digit.max():.3f}", f"{digit.mean():.3f}", "-"],
                [
                    "pooled",
                    f"{pooled.size}",
                    f"{pooled.max():.3f}",
                    f"{pooled.mean():.3f}",
                    f"{pool_error:.1e}",
                ],
            ],
        )
    )

    n_train, n_test = ctx.pick((960, 500), (6000, 2000))
    pick = rng.permutation(len(mnist.x_train))[:n_train]
    test = rng.permutation(len(mnist.x_test))[:n_test]
    cnn = train_cnn(
        (mnist.x_train[pick], mnist.y_train[pick], mnist.x_test[test], mnist.y_test[test]), rng
    )
    before, after = np.asarray(cnn["before"]), np.asarray(cnn["after"])
    edges = {k: v for k, v in KERNELS.items() if k != "blur"}  # blur is flat after centring
    cos_before, cos_after = best_cosines(before, edges), best_cosines(after, edges)
    moved = float(np.linalg.norm(after - before) / np.linalg.norm(before))
    rows = [[name, f"{cos_before[name]:.2f}", f"{cos_after[name]:.2f}"] for name in edges]
    accuracy = float(cnn["accuracy"])  # type: ignore[arg-type]
    seconds = float(cnn["seconds"])  # type: ignore[arg-type]
    report.tables.append(
        Table(
            ["hand kernel", "nearest filter at init", "nearest filter trained"],
            rows,
            f"LeNet (conv 32 3x3 first), Adam 3e-3, one epoch on {n_train} images "
            f"({cnn['steps']} steps, {seconds:.1f} s): test accuracy {100 * accuracy:.1f}% on "
            f"{n_test}; |cosine| of zero-mean weights; the filters moved {100 * moved:.0f}% "
            "of their initial norm",
        )
    )
    report.numbers.update(
        digit_index=index,
        conv_error=conv_error,
        pool_error=pool_error,
        responses=responses,
        pooled_shape=pooled.shape,
        pooled_max=float(pooled.max()),
        digit_max=float(digit.max()),
        cnn_accuracy=accuracy,
        cnn_seconds=seconds,
        filters_moved=moved,
        cos_before=cos_before,
        cos_after=cos_after,
        n_train=n_train,
    )

    zero_sum = [n for n, k in KERNELS.items() if abs(k.sum()) < 1e-12]
    report.findings.append(
        f"The kernels that sum to 0 ({', '.join(zero_sum)}) give 0 on a flat image; blur and "
        f"sharpen sum to 1 and give {responses['blur']['flat']:.3g} and "
        f"{responses['sharpen']['flat']:.3g}."
    )
    h, v = responses["horizontal edges"], responses["vertical edges"]
    report.findings.append(
        f"The horizontal-edge kernel answers a horizontal line with {h['horizontal line']:.3g} "
        f"and a vertical one with {h['vertical line']:.3g}; the vertical-edge kernel "
        f"{v['vertical line']:.3g} and {v['horizontal line']:.3g}."
    )
    report.findings.append(
        f"2x2 max pooling keeps {pooled.size} of {digit.size} pixels and the brightest one "
        f"({pooled.max():.3f} of {digit.max():.3f}); nn.Conv2d and nn.MaxPool2d match the "
        f"loop reference to {max(conv_error, pool_error):.1e}."
    )
    mean_before = float(np.mean(list(cos_before.values())))
    mean_after = float(np.mean(list(cos_after.values())))
    report.findings.append(
        f"After one short epoch the CNN's filters moved {100 * moved:.0f}% of their initial "
        f"norm and it scores {100 * accuracy:.1f}%; the nearest learned filter's |cosine| with "
        f"the edge kernels went from {mean_before:.2f} to {mean_after:.2f} on average "
        f"({'closer' if mean_after > mean_before else 'not closer'}; with 32 filters of 9 "
        "weights even random ones come close, so edge-like shapes are a weak signal)."
    )
    report.figures += _figures(ctx, digit, maps, pooled, before, after, int(mnist.y_test[index]))
    return report


def _figures(
    ctx: Context,
    digit: np.ndarray,
    maps: np.ndarray,
    pooled: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    label: int,
) -> list:
    plt = pyplot()
    n = len(KERNELS)
    fig, axes = plt.subplots(2, n + 2, figsize=(2 * (n + 2), 4.4), layout="constrained")
    axes[0, 0].imshow(digit, cmap="gray")
    axes[0, 0].set_title(f"digit ({label})", fontsize=9)
    axes[1, 0].axis("off")
    for i, (name, k) in enumerate(KERNELS.items(), start=1):
        lim = float(np.max(np.abs(maps[i - 1])))
        axes[0, i].imshow(maps[i - 1], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0, i].set_title(name, fontsize=9)
        kl = float(np.max(np.abs(k)))
        axes[1, i].imshow(k, cmap="RdBu_r", vmin=-kl, vmax=kl)
        for (r, c), v in np.ndenumerate(k):
            axes[1, i].text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=7)
    axes[0, n + 1].imshow(pooled, cmap="gray")
    axes[0, n + 1].set_title("2x2 max pool", fontsize=9)
    axes[1, n + 1].axis("off")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    kernel_path = ctx.figure("kernels")
    fig.savefig(kernel_path, dpi=100)
    plt.close(fig)

    # the trained filters' answers to the digit, as the hand kernels' in the other figure
    responses, _ = apply_kernels(digit, {str(i): f for i, f in enumerate(after)})
    fig, axes = plt.subplots(6, 16 + 1, figsize=(14, 5.8), layout="constrained")
    panels = ((before, "at init"), (after, "trained"), (responses, "trained,\non the digit"))
    for row, (images, name) in enumerate(panels):
        for i, image in enumerate(images):
            ax = axes[2 * row + i // 16, 1 + i % 16]
            lim = float(np.max(np.abs(image)))
            ax.imshow(image, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2 * row, 0].text(0.5, 0.5, name, ha="center", va="center", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(ax.get_subplotspec().colspan.start > 0)
    filters_path = ctx.figure("learned_filters")
    fig.savefig(filters_path, dpi=100)
    plt.close(fig)
    return [kernel_path, filters_path]
