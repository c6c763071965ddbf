"""The checker's arithmetic: a state to probe from, the gradients of the lab's network,
the classic bugs' gradients, and how well an observed step matches each.

Pure NumPy, float64, no learner code: :mod:`handgrad.lab._checkrunner` drives the
learner's class and hands the numbers here.

Arrays are in the lab's canonical layout, ``W1 (784, 128)``, ``b1 (128,)``,
``W2 (128, 10)``, ``b2 (10,)``; :func:`to_canonical` and :func:`to_learner`
translate a learner's layout (``W1`` stored as ``(128, 784)``, a bias as
``(1, 128)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handgrad.lab._contract import PARAMETERS

Grads = dict[str, np.ndarray]
#: Below this cosine a step does not follow a candidate gradient.
AGREE = 0.99


@dataclass
class Probe:
    """A batch and a well-conditioned state of the network to check gradients at.

    Every hidden unit's pre-activations on the batch stay at least ``margin`` away
    from the ReLU kink, so numeric differences with a step below ``margin`` never
    cross it; most units are active on some rows and not on others, the case in
    which the classic ReLU bugs differ from the right gradient.
    """

    X: np.ndarray  # (N, 784) float32 in [0, 1], exact in float32
    y: np.ndarray  # (N,) int64
    params: Grads  # canonical float64
    margin: float


def make_probe(n: int = 16, seed: int = 0) -> Probe:
    rng = np.random.default_rng(seed)
    X = (rng.integers(0, 256, size=(n, 784)) / 255.0).astype(np.float32)
    y = rng.permutation(np.arange(n) % 10).astype(np.int64)
    W1 = rng.standard_normal((784, 128)) * np.sqrt(2.0 / 784)
    H = X.astype(np.float64) @ W1  # (N, 128), before the bias
    b1 = np.empty(128)
    margins = np.empty(128)
    for j in range(128):
        v = np.sort(H[:, j])
        if j % 8 == 0:  # always active
            b1[j], margins[j] = 0.2 - v[0], 0.2
        elif j % 8 == 1:  # never active: its true gradient is zero
            b1[j], margins[j] = -0.2 - v[-1], 0.2
        else:  # the kink in the widest gap, at least 3 rows on either side
            gaps = np.diff(v)[2 : n - 3]
            k = 2 + int(np.argmax(gaps))
            b1[j], margins[j] = -(v[k] + v[k + 1]) / 2, gaps.max() / 2
    W2 = rng.standard_normal((128, 10)) * np.sqrt(1.0 / 128)
    b2 = 0.1 * rng.standard_normal(10)
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    return Probe(X=X, y=y, params=params, margin=float(margins.min()))


def to_canonical(name: str, a: np.ndarray) -> np.ndarray:
    """A learner's array in the canonical layout, as float64."""
    a = np.asarray(a, dtype=np.float64)
    if (name, a.shape) in (("W1", (128, 784)), ("W2", (10, 128))):
        return a.T
    return a.reshape(-1) if name in ("b1", "b2") else a


def to_learner(name: str, canonical: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``canonical`` laid out like the learner's array of ``shape``."""
    if canonical.ndim == 2 and canonical.shape != shape:
        return canonical.T
    return canonical.reshape(shape)


def softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def network(params: Grads, X: np.ndarray) -> dict[str, np.ndarray]:
    """The lab's forward pass in float64: ``H``, ``A`` and ``P``."""
    H = X.astype(np.float64) @ params["W1"] + params["b1"]
    A = np.maximum(H, 0.0)
    return {"H": H, "A": A, "P": softmax(A @ params["W2"] + params["b2"])}


def cross_entropy(P: np.ndarray, y: np.ndarray) -> float:
    picked = np.asarray(P, dtype=np.float64)[np.arange(len(y)), y]
    return float(-np.log(np.maximum(picked, 1e-300)).mean())


#: What a ReLU's backward multiplies ``dA`` by: the right derivative and the classic slips
#: (none, the ReLU's output instead of its derivative, the mask inverted).
RELU_VARIANTS = {
    "right": lambda H, A: (H > 0).astype(np.float64),
    "missing": lambda H, A: np.ones_like(H),
    "output": lambda H, A: A,
    "inverted": lambda H, A: (H <= 0).astype(np.float64),
}


def candidate_gradients(params: Grads, X: np.ndarray, y: np.ndarray) -> dict[str, Grads]:
    """The right gradients (``"right"``) and those of each classic bug, canonical layout.

    Keys name the bug: ``"relu: missing"``, ``"b1: summed over every axis"``, ... Only
    the entries a bug changes are present; the others are the right ones.
    """
    n = len(y)
    f = network(params, X)
    Xd = X.astype(np.float64)
    dZ = f["P"].copy()
    dZ[np.arange(n), y] -= 1.0
    dZ /= n  # (N, 10): the batch mean enters once, here
    dA = dZ @ params["W2"].T  # (N, 128)
    out: dict[str, Grads] = {}
    for name, derivative in RELU_VARIANTS.items():
        dH = dA * derivative(f["H"], f["A"])  # (N, 128)
        key = "right" if name == "right" else f"relu: {name}"
        out[key] = {"W1": Xd.T @ dH, "b1": dH.sum(axis=0)}
    right = out["right"]
    right["W2"] = f["A"].T @ dZ  # (128, 10)
    right["b2"] = dZ.sum(axis=0)  # (10,)
    for b, d in (("b1", right["b1"]), ("b2", right["b2"])):
        # db = sum of every entry, not of each column: the same number in every unit
        whole = (dA * (f["H"] > 0)).sum() if b == "b1" else dZ.sum()
        out[f"{b}: summed over every axis"] = {b: np.full_like(d, whole)}
    return out


def step_fit(step: np.ndarray, grad: np.ndarray) -> tuple[float, str]:
    """How well ``step`` (new - old) follows ``-grad``: ``(cosine, rule)``.

    Two update rules cover the first step from a fresh optimizer state: plain SGD
    and momentum move by ``-lr * g`` (``rule="linear"``); Adam, RMSProp and Adagrad
    by ``-lr * g / (|g| + eps)``, the sign of ``g`` (``rule="sign"``). The better
    cosine of the two is returned; 1 means the step is exactly that rule's.
    """
    s = -np.asarray(step, dtype=np.float64).ravel()
    g = np.asarray(grad, dtype=np.float64).ravel()
    fits = {"linear": _cosine(s, g), "sign": _cosine(s, g / (np.abs(g) + 1e-8))}
    rule = max(fits, key=lambda k: fits[k])
    return fits[rule], rule


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def numeric_entries(params: Grads, seed: int = 1) -> dict[str, np.ndarray]:
    """Which entries of each parameter to differentiate numerically (flat canonical indices)."""
    rng = np.random.default_rng(seed)
    count = {"W1": 48, "b1": 24, "W2": 24, "b2": 10}
    return {
        name: np.sort(rng.choice(params[name].size, size=count[name], replace=False))
        for name in PARAMETERS
    }


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / max(|a|, |b|)`` over the whole arrays (0 when both are zero)."""
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0
