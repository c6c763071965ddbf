"""Bug: the class is not called NeuralNetwork."""

import numpy as np


class Network:
    def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
        self.W1 = np.zeros((input_size, hidden_size))
