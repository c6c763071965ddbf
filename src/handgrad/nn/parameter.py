"""The trainable tensor: a value and the gradient of the loss with respect to it."""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np


class Parameter:
    """A trainable array and its gradient.

    ``data`` and ``grad`` always have the same shape and dtype. Backward passes
    accumulate into ``grad`` (``+=``) until :meth:`zero_grad` is called, so a
    parameter used twice in one graph receives both contributions.

    Parameters
    ----------
    data : array_like
        Initial value. Must be a floating-point array; it is copied.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray) -> None:
        arr = np.array(data, copy=True)
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"Parameter needs a floating-point array, got dtype {arr.dtype}")
        self.data: np.ndarray = arr
        self.grad: np.ndarray = np.zeros_like(arr)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def zero_grad(self) -> None:
        """Reset the accumulated gradient to zero (in place, keeping the buffer)."""
        self.grad[...] = 0

    def astype(self, dtype: np.dtype | type) -> None:
        """Convert value and gradient to ``dtype`` in place of the old arrays."""
        self.data = self.data.astype(dtype)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"

    # -- not an array ---------------------------------------------------------------
    # A Parameter is a box holding two arrays, not an array: ``x * self.a`` must
    # say which array it meant (the value, ``.data``, or its gradient, ``.grad``)
    # instead of failing deep inside NumPy with a bare TypeError.

    def _not_an_array(self, what: str) -> NoReturn:
        raise TypeError(
            f"{what} a Parameter of shape {self.shape}: a Parameter is not an array; use its value "
            f"'.data' in forward (e.g. x * self.a.data) and accumulate into '.grad' in "
            f"backward (self.a.grad += ...)"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._not_an_array("cannot convert")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> NoReturn:
        self._not_an_array(f"cannot apply numpy.{ufunc.__name__} to")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> NoReturn:
        self._not_an_array(f"cannot apply numpy.{func.__name__} to")

    def __getitem__(self, key: Any) -> NoReturn:
        self._not_an_array("cannot index")

    def __setitem__(self, key: Any, value: Any) -> NoReturn:
        self._not_an_array("cannot assign into")

    def __len__(self) -> NoReturn:
        self._not_an_array("len() of")

    def __iter__(self) -> NoReturn:
        self._not_an_array("cannot iterate over")

    def __float__(self) -> NoReturn:
        self._not_an_array("float() of")

    def __bool__(self) -> bool:
        return True  # `if param:` and `param or default` keep meaning "is there one"


def _arithmetic(symbol: str) -> Any:
    def op(self: Parameter, other: Any) -> NoReturn:
        self._not_an_array(f"cannot use '{symbol}' with")

    return op


for _name, _symbol in {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
    "pow": "**", "matmul": "@",
}.items():  # fmt: skip
    for _prefix in ("__", "__r", "__i"):
        setattr(Parameter, f"{_prefix}{_name}__", _arithmetic(_symbol))
for _name, _symbol in {"neg": "unary -", "pos": "unary +", "abs": "abs()"}.items():
    setattr(Parameter, f"__{_name}__", lambda self, _s=_symbol: self._not_an_array(f"{_s} of"))
for _name, _symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
    setattr(Parameter, f"__{_name}__", _arithmetic(_symbol))
