"""Layers, activations, losses and the ``Module`` machinery, with PyTorch's names."""

from handgrad.nn import functional, init
from handgrad.nn.activations import (
    ELU,
    GELU,
    SELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from handgrad.nn.layers import Dropout, Flatten, Identity, Linear
from handgrad.nn.loss import Loss
from handgrad.nn.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    FocalLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
)
from handgrad.nn.module import Module, Sequential
from handgrad.nn.normalization import BatchNorm1d, LayerNorm
from handgrad.nn.parameter import Parameter
from handgrad.nn.utils import clip_grad_norm_, clip_grad_value_

__all__ = [
    "ELU",
    "GELU",
    "SELU",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "FocalLoss",
    "HuberLoss",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "MultiMarginLoss",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "clip_grad_norm_",
    "clip_grad_value_",
    "functional",
    "init",
]
