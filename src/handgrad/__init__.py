"""handgrad: neural networks from scratch in NumPy, every gradient derived by hand.

>>> import numpy as np
>>> from handgrad import nn, optim
>>> model = nn.Sequential(nn.Linear(784, 128, rng=0), nn.ReLU(), nn.Linear(128, 10, rng=1))
>>> optimizer = optim.Adam(model.parameters(), lr=1e-3)
"""

from handgrad import nn, optim
from handgrad._threads import (
    get_blas_threads,
    get_num_threads,
    set_blas_threads,
    set_num_threads,
    threads,
)
from handgrad.explain import explain
from handgrad.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_loss
from handgrad.nn.summary import summary
from handgrad.serialization import load, load_state, save

__version__ = "0.1.0"

__all__ = [
    "GradcheckError",
    "GradcheckResult",
    "__version__",
    "explain",
    "get_blas_threads",
    "get_num_threads",
    "gradcheck",
    "gradcheck_loss",
    "load",
    "load_state",
    "nn",
    "optim",
    "save",
    "set_blas_threads",
    "set_num_threads",
    "summary",
    "threads",
]
