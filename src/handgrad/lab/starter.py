"""MNIST from scratch: a 784 -> 128 (ReLU) -> 10 (softmax) network in NumPy alone.

The lab's starter file (``handgrad lab start`` writes it out). Fill in every
method marked TODO, using nothing but NumPy: no other library, no autograd.
After each one, run ``handgrad lab check neural_network.py``: in a few seconds
it says which methods are still to write and names the usual bugs in what you
wrote. When it finds none, ``handgrad lab grade neural_network.py`` trains the
network on MNIST the way the lab's grader does (at least 85% test accuracy,
within 120 s and 2 GB).

The grader calls the class with its default arguments, hands ``X`` as float32
pixels in [0, 1] of shape ``(N, 784)`` and ``y`` as class indices ``(N,)`` in
0..9, and calls ``train_step`` on shuffled mini-batches.

The network (shapes for a batch of N images)::

    H = X W1 + b1          (N, 128)    W1: (784, 128), b1: (128,)
    A = max(H, 0)          (N, 128)    ReLU
    Z = A W2 + b2          (N, 10)     W2: (128, 10),  b2: (10,)
    P = softmax(Z)         (N, 10)     each row sums to 1

The loss is the mean cross-entropy over the batch, ``L = -1/N sum_i log P[i, y_i]``.

``backward`` needs the gradient of L with respect to each of W1, b1, W2, b2, by
the chain rule, from the output back to the input. Each gradient has the shape
of what it is the gradient of: ``dZ`` (N, 10), ``dW2`` (128, 10), ``db2`` (10,),
``dA`` and ``dH`` (N, 128), ``dW1`` (784, 128), ``db1`` (128,).
"""

import numpy as np  # noqa: F401 (yours to use)


class NeuralNetwork:
    """Two-layer perceptron for MNIST with hand-written forward and backward passes.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        784, 128 and 10 for MNIST.
    lr : float
        Learning rate of the update in ``backward``.
    """

    def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.lr = lr
        # TODO: create the parameters as NumPy arrays named W1, b1, W2, b2 with the
        # shapes in the module docstring. Draw the weights at random, from a seeded
        # np.random.default_rng, at a scale that keeps H of order 1 (He initialisation
        # for a ReLU layer); start the biases at zero.
        raise NotImplementedError(
            "create W1 (input_size, hidden_size), b1 (hidden_size,), W2 (hidden_size, "
            "output_size) and b2 (output_size,): random weights at the He scale "
            "sqrt(2 / fan_in), zero biases"
        )

    def forward(self, X):
        """Class probabilities ``P`` of shape ``(N, 10)``, each row summing to 1.

        Keep what ``backward`` will need (H or A, for instance) on ``self``.
        """
        # TODO: H, A, Z and P as in the module docstring. exp() of a large logit
        # overflows to inf: make the softmax safe for logits of any size.
        raise NotImplementedError(
            "compute H = X W1 + b1, A = max(H, 0), Z = A W2 + b2 and return P = softmax(Z), "
            "shape (N, 10); keep what backward needs on self"
        )

    def backward(self, X, y, probs):
        """Update W1, b1, W2 and b2 by one step down the gradient; return the loss.

        ``probs`` is what ``forward(X)`` returned; the loss is the mean cross-entropy
        of ``probs`` for the labels ``y``, as a Python float.
        """
        # TODO: the gradients dZ, dW2, db2, dA, dH, dW1, db1 by the chain rule (their
        # shapes are in the module docstring), then the update, e.g. plain SGD:
        # parameter -= lr * gradient.
        raise NotImplementedError(
            "return the mean cross-entropy of probs for y; compute dW1, db1, dW2, db2 "
            "(each the shape of its parameter) and update the four parameters"
        )

    def train_step(self, X, y):
        """One forward and backward pass on a mini-batch; returns the loss."""
        return self.backward(X, y, self.forward(X))

    def predict(self, X):
        """Predicted class of each row of ``X``: integer labels of shape ``(N,)``."""
        # TODO: the most probable class of each row.
        raise NotImplementedError("return the most probable class of each row: ints, shape (N,)")
