"""Bug: the returned loss is summed over the batch, not averaged."""

import numpy as np


class NeuralNetwork:
    def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
        rng = np.random.default_rng(0)
        self.W1 = rng.standard_normal((input_size, hidden_size)) * np.sqrt(2.0 / input_size)
        self.b1 = np.zeros(hidden_size)
        self.W2 = rng.standard_normal((hidden_size, output_size)) * np.sqrt(2.0 / hidden_size)
        self.b2 = np.zeros(output_size)
        self.lr = lr

    def forward(self, X):
        self.X = X
        self.H = X @ self.W1 + self.b1
        self.A = np.maximum(self.H, 0)
        Z = self.A @ self.W2 + self.b2
        Z = Z - Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def backward(self, X, y, probs):
        n = len(y)
        loss = -np.sum(np.log(probs[np.arange(n), y] + 1e-12))
        dZ = probs.copy()
        dZ[np.arange(n), y] -= 1
        dZ /= n
        dW2 = self.A.T @ dZ
        db2 = dZ.sum(axis=0)
        dA = dZ @ self.W2.T
        dH = dA * (self.H > 0)
        dW1 = X.T @ dH
        db1 = dH.sum(axis=0)
        self.W1 -= self.lr * dW1
        self.b1 -= self.lr * db1
        self.W2 -= self.lr * dW2
        self.b2 -= self.lr * db2
        return loss

    def train_step(self, X, y):
        return self.backward(X, y, self.forward(X))

    def predict(self, X):
        return self.forward(X).argmax(axis=1)
