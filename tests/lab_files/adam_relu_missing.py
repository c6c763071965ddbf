"""Bug: the ReLU derivative is left out, in a float32 file with Adam."""

import numpy as np


class NeuralNetwork:
    def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
        rng = np.random.default_rng(2)
        limit1 = np.sqrt(6.0 / (input_size + hidden_size))  # Glorot uniform
        limit2 = np.sqrt(6.0 / (hidden_size + output_size))
        self.W1 = rng.uniform(-limit1, limit1, (input_size, hidden_size)).astype(np.float32)
        self.b1 = np.zeros(hidden_size, dtype=np.float32)
        self.W2 = rng.uniform(-limit2, limit2, (hidden_size, output_size)).astype(np.float32)
        self.b2 = np.zeros(output_size, dtype=np.float32)
        self.lr = lr * 0.1
        self.t = 0
        self.m = {k: np.zeros_like(getattr(self, k)) for k in ("W1", "b1", "W2", "b2")}
        self.v = {k: np.zeros_like(getattr(self, k)) for k in ("W1", "b1", "W2", "b2")}

    def forward(self, X):
        X = X.astype(np.float32)
        self.H = X @ self.W1 + self.b1
        self.A = np.where(self.H > 0, self.H, 0.0)
        Z = self.A @ self.W2 + self.b2
        Z -= Z.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(Z).sum(axis=1, keepdims=True))
        self.logp = Z - logsum
        return np.exp(self.logp)

    def backward(self, X, y, probs):
        n = len(y)
        loss = float(-self.logp[np.arange(n), y].mean())
        dZ = probs.copy()
        dZ[np.arange(n), y] -= 1.0
        dZ /= n
        dA = dZ @ self.W2.T
        dH = dA
        grads = {"W1": X.T @ dH, "b1": dH.sum(0), "W2": self.A.T @ dZ, "b2": dZ.sum(0)}
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            m_hat = self.m[k] / (1 - 0.9**self.t)
            v_hat = self.v[k] / (1 - 0.999**self.t)
            setattr(self, k, getattr(self, k) - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8))
        return loss

    def train_step(self, X, y):
        return self.backward(X, y, self.forward(X))

    def predict(self, X):
        return self.forward(X).argmax(axis=1)
