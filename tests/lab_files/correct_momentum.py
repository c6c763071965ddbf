"""A correct lab file with SGD and momentum, weights stored as (out, in), biases as rows."""

import numpy as np


class NeuralNetwork:
    def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
        rng = np.random.default_rng(1)
        self.W1 = rng.normal(0.0, np.sqrt(2.0 / input_size), (hidden_size, input_size))
        self.b1 = np.zeros((1, hidden_size))
        self.W2 = rng.normal(0.0, np.sqrt(1.0 / hidden_size), (output_size, hidden_size))
        self.b2 = np.zeros((1, output_size))
        self.lr, self.momentum = lr, 0.9
        self.velocity = [np.zeros_like(p) for p in (self.W1, self.b1, self.W2, self.b2)]

    def forward(self, X):
        self.H = X @ self.W1.T + self.b1
        self.A = np.maximum(self.H, 0)
        Z = self.A @ self.W2.T + self.b2
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)

    def backward(self, X, y, probs):
        n = X.shape[0]
        Y = np.eye(10)[y]
        loss = -np.sum(Y * np.log(np.clip(probs, 1e-12, 1.0))) / n
        dZ = (probs - Y) / n
        grads = [None, None, dZ.T @ self.A, dZ.sum(axis=0, keepdims=True)]
        dH = (dZ @ self.W2) * (self.H > 0)
        grads[0], grads[1] = dH.T @ X, dH.sum(axis=0, keepdims=True)
        for p, g, v in zip((self.W1, self.b1, self.W2, self.b2), grads, self.velocity):
            v *= self.momentum
            v -= self.lr * g
            p += v
        return loss

    def train_step(self, X, y):
        return self.backward(X, y, self.forward(X))

    def predict(self, X):
        return np.argmax(self.forward(X), axis=1)
