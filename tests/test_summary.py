"""model.summary(input_shape): layers, output shapes and counts; the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import nn
from handgrad.recipes import build_cnn


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8, rng=0),
        nn.Dropout(0.5, rng=1),
        nn.Sequential(nn.Linear(8, 4, rng=2), nn.BatchNorm1d(4), nn.ReLU()),
        nn.Linear(4, 3, rng=3),
    )


def test_the_table_of_a_nested_mlp() -> None:
    text = _mlp().summary((3, 4))
    assert text == "\n".join(
        [
            "Layer (type)        Output shape   Param #",
            "==========================================",
            "0 (Flatten)         (N, 12)              0",
            "1 (Linear)          (N, 8)             104",
            "2 (Dropout)         (N, 8)               0",
            "3.0 (Linear)        (N, 4)              36",
            "3.1 (BatchNorm1d)   (N, 4)              16",
            "3.2 (ReLU)          (N, 4)               0",
            "4 (Linear)          (N, 3)              15",
            "==========================================",
            "Input: (N, 3, 4) float32",
            "Total params: 171 (692 B)",  # 163 float32 parameters, 8 float32 and an int64
            "Trainable params: 163 (652 B)",
            "Non-trainable params: 8 (40 B)",
        ]
    )


def test_counts_and_shapes_of_a_cnn_and_the_function_form() -> None:
    model = build_cnn((28, 28), 10, rng=0)
    text = handgrad.summary(model, (1, 28, 28))
    assert "(N, 64, 7, 7)" in text and "(N, 10)" in text
    total = sum(p.size for p in model.parameters())
    stats = sum(b.size for _, b in model.named_buffers() if b.dtype.kind == "f")
    assert f"Trainable params: {total:,} " in text
    assert f"Non-trainable params: {stats:,} " in text
    assert f"Total params: {total + stats:,} " in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_the_model_is_left_as_it_was() -> None:
    model = _mlp()
    model.train()
    model[1].eval()  # a mixed state survives too
    x = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    dropout_state = model[2].rng.bit_generator.state
    model.summary(12)
    assert [m.training for m in model.modules()] == [True, True, False, *[True] * 6]
    assert model[2].rng.bit_generator.state == dropout_state  # eval mode: no mask drawn
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # running stats too
    assert model[1]._cache is None and model[3][1]._cache is None  # no batch kept
    model.forward(x)  # and it still trains
    model.backward(np.ones((5, 3), np.float32))
    # between a forward and its backward too: the last forward's caches are kept
    model.eval()  # (no dropout masks: the two passes compute the same)
    model.zero_grad()
    model.forward(x)
    model.backward(np.ones((5, 3), np.float32))
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model.forward(x)
    model.summary(12)
    model.backward(np.ones((5, 3), np.float32))
    assert all(np.array_equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))


def test_long_names_stay_inside_80_columns_and_print_fn_gets_the_text() -> None:
    class AVeryLongNameForACustomLayerThatSomeoneWroteToSeeHowTheTableCopes(nn.Identity):
        pass

    deep = nn.Sequential(nn.Linear(2, 2, rng=0))
    for _ in range(10):
        deep = nn.Sequential(deep)
    model = nn.Sequential(deep, AVeryLongNameForACustomLayerThatSomeoneWroteToSeeHowTheTableCopes())
    seen: list[str] = []
    text = model.summary((2,), print_fn=seen.append)
    assert seen == [text]
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.0.0.0.0.0.0.0.0.0.0.0 (Linear)" in text
    assert "1 (AVeryLongName" in text and "..." in text


def test_a_shape_the_model_cannot_take_names_the_layer() -> None:
    model = _mlp()
    with pytest.raises(
        ValueError, match=r"layer 1 \(Linear\) cannot take input of shape \(N, 10\)"
    ):
        model.summary((10,))
    assert model.training  # restored after the failure too
    with pytest.raises(ValueError, match="positive sizes"):
        model.summary((0, 4))
