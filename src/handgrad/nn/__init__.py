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
from handgrad.nn.conv import Conv2d
from handgrad.nn.layers import Dropout, Dropout2d, Flatten, Identity, Linear, Unflatten
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
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handgrad.nn.parameter import Parameter
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from handgrad.nn.utils import clip_grad_norm_, clip_grad_value_

__all__ = [
    "ELU",
    "GELU",
    "SELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Dropout2d",
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
    "MaxPool2d",
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
    "Unflatten",
    "clip_grad_norm_",
    "clip_grad_value_",
    "functional",
    "init",
]
