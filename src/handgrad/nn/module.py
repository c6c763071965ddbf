"""``Module`` and ``Sequential``: the containers every layer is built from.

A module owns its :class:`~handgrad.nn.Parameter` objects, keeps a small cache
from ``forward`` for ``backward``, and knows whether it is training. The
attribute bookkeeping follows PyTorch: assigning a ``Parameter`` or a
``Module`` to an attribute registers it, in order, so ``named_parameters()``
and ``state_dict()`` produce names such as ``"0.weight"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from handgrad.nn.parameter import Parameter


def _refuse_hidden_parameters(owner: Any, name: str, value: Any) -> None:
    """A list, tuple or dict of Parameters or Modules is not registered: parameters(),
    optimizers, gradcheck and save would silently leave them out. Say so."""
    items = list(value.values() if isinstance(value, dict) else value)
    params = any(isinstance(v, Parameter) for v in items)
    modules = any(isinstance(v, Module) for v in items)
    if not (params or modules):
        return
    what = " and ".join(k for k, found in (("Parameters", params), ("Modules", modules)) if found)
    raise TypeError(
        f"{type(owner).__name__}.{name}: a {type(value).__name__} of {what} is not "
        "registered, so parameters(), the optimizer, gradcheck and save would leave "
        "them out; assign each to an attribute of its own (self.w0 = Parameter(...)), "
        "or put layers in an nn.Sequential"
    )


# Attributes in which a forward keeps what its backward needs (see Module.clear_cache).
_CACHE_ATTRIBUTES = ("_cache", "_mask", "_shape", "_in_shape", "_out_shape", "_in_hw", "_ran")


class Module:
    """Base class of every layer, activation and network.

    Subclasses implement :meth:`forward` (cache what backward needs) and
    :meth:`backward` (return the gradient w.r.t. the input and *accumulate*
    parameter gradients with ``+=``).
    """

    training: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        # Keep the constructor arguments: handgrad.save writes them as the
        # architecture, so a model is rebuilt from JSON, never unpickled.
        obj = super().__new__(cls)
        object.__setattr__(obj, "_init_args", (args, kwargs))
        return obj

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- attribute registration -------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        own = self.__dict__
        params, modules = own.get("_parameters"), own.get("_modules")
        if (
            name in own
            and name[0] == "_"
            and params is not None
            and modules is not None
            and name not in params
            and name not in modules
            and name not in own["_buffers"]
            and not isinstance(value, (Parameter, Module))
        ):
            own[name] = value  # a private attribute again (a forward's cache): nothing to register
            return
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before "
                "assigning attributes"
            )
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            # public names only: a module's own bookkeeping (Sequential._ran) is private
            if isinstance(value, (list, tuple, dict)) and not name.startswith("_"):
                _refuse_hidden_parameters(self, name, value)
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: parameters, buffers, submodules.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Register non-trainable state (e.g. running statistics) saved in ``state_dict``."""
        for table in (self._parameters, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def add_module(self, name: str, module: Module) -> None:
        """Register ``module`` under ``name`` (used by containers)."""
        if not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a Module, got {type(module).__name__}")
        setattr(self, name, module)

    # -- computation ------------------------------------------------------------

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output and cache what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Return ``dL/dx`` given ``dout = dL/dout``; accumulate parameter gradients."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_params(self, dout: np.ndarray) -> None:
        """Accumulate the parameter gradients only, without computing ``dL/dx``.

        For a network whose input is data, the gradient w.r.t. that input is
        never used, and for a first ``Linear`` layer it costs as much as the
        weight gradient. :func:`handgrad.train.fit` calls this. The default runs
        :meth:`backward` and drops its result.
        """
        self.backward(dout)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.forward(x)
        except TypeError as exc:
            # The input policy: model(x) takes floats as they are; fit and predict are
            # the functions that scale integer images (see handgrad.train).
            if isinstance(x, np.ndarray) and (
                np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_
            ):
                dtype = next((p.dtype for p in self.parameters()), np.dtype(np.float32))
                raise TypeError(
                    f"{exc}. {type(self).__name__}(x) takes floating-point input and "
                    f"converts nothing: scale integer images yourself, "
                    f"x.astype(np.{dtype}) / 255, or use handgrad.train.predict(model, x) "
                    "(or predict_proba), which scales them to [0, 1]"
                ) from exc
            raise

    def clear_cache(self) -> Module:
        """Drop what the last forward kept for :meth:`backward`, in every submodule.

        A forward keeps its inputs or intermediate arrays (one batch's worth of
        activations) until the next forward, in evaluation mode too, so that a
        gradient check can run backward on an eval-mode model. :func:`~handgrad.train.fit`,
        :func:`~handgrad.train.predict` and :func:`~handgrad.train.evaluate` call this when
        they finish, so a trained or evaluated model holds its weights and nothing
        else. A backward after it raises the error of a backward without a forward.
        """
        for module in self.modules():
            fused = module.__dict__.get("_fused") or {}
            for m in (module, *fused.values()):
                for name in _CACHE_ATTRIBUTES:
                    if m.__dict__.get(name) is not None:
                        object.__setattr__(m, name, None)
                if m.__dict__.get("_scratch"):
                    object.__setattr__(m, "_scratch", {})
        return self

    def _cached(self, cache: Any) -> Any:
        """Return ``cache`` or raise the error for a backward without a forward."""
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "run a forward pass first"
            )
        return cache

    # -- traversal --------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for mod_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{mod_name}.{name}" if mod_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for mod_name, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), buf

    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        return sum(p.size for p in self.parameters())

    # -- state ------------------------------------------------------------------

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode, recursively."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: dropout off, batch norm uses running statistics."""
        return self.train(False)

    def to(self, dtype: np.dtype | type) -> Module:
        """Convert every parameter and floating buffer to ``dtype``."""
        dt = np.dtype(dtype)
        if not np.issubdtype(dt, np.floating):
            raise TypeError(f"Module.to needs a floating dtype, got {dt}")
        for module in self.modules():
            for param in module._parameters.values():
                param.astype(dt)
            for name, buf in module._buffers.items():
                if np.issubdtype(buf.dtype, np.floating):
                    module._buffers[name] = buf.astype(dt)
            module._on_dtype_change(dt)
        return self

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        """Hook for modules that keep a dtype attribute of their own."""
        if "dtype" in self.__dict__:
            object.__setattr__(self, "dtype", dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed ``"<module path>.<name>"``."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Raises ``KeyError`` naming missing/unexpected keys (when ``strict``) and
        ``ValueError`` naming any shape mismatch. Nothing is changed on error.
        """
        targets: dict[str, tuple[Module, str, bool]] = {}
        for mod_name, module in self.named_modules():
            for name in module._parameters:
                targets[f"{mod_name}.{name}" if mod_name else name] = (module, name, True)
            for name in module._buffers:
                targets[f"{mod_name}.{name}" if mod_name else name] = (module, name, False)
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: " + "; ".join(parts))
        updates: list[tuple[Module, str, bool, np.ndarray]] = []
        for key, (module, name, is_param) in targets.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            current = module._parameters[name].data if is_param else module._buffers[name]
            if value.shape != current.shape:
                raise ValueError(
                    f"load_state_dict: {key!r} has shape {value.shape} in the state dict "
                    f"but {current.shape} in the model"
                )
            updates.append((module, name, is_param, value.astype(current.dtype, copy=True)))
        for module, name, is_param, value in updates:
            if is_param:
                module._parameters[name].data = value
                module._parameters[name].grad = np.zeros_like(value)
            else:
                module._buffers[name] = value

    # -- display ----------------------------------------------------------------

    def summary(
        self, input_shape: int | Sequence[int], *, print_fn: Callable[[str], Any] | None = None
    ) -> str:
        """A table of the layers, their output shapes for one sample of ``input_shape``
        (no batch dimension) and parameter counts; see :func:`handgrad.nn.summary.summary`.
        ``print(model.summary((784,)))`` shows it."""
        from handgrad.nn.summary import summary

        return summary(self, input_shape, print_fn=print_fn)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [
            f"({name}): {child!r}".replace("\n", "\n  ") for name, child in self._modules.items()
        ]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Shape: whatever the first module takes -> whatever the last returns.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int) -> Module:
        modules = list(self._modules.values())
        return modules[index]

    def _order(self) -> list[Module]:
        """The modules in the order they compute: a ReLU directly followed by a
        MaxPool2d whose windows neither overlap nor reach into padding runs after
        it instead. Max-pooling and ReLU commute (both are monotone), and so do
        their gradients, to the bit: in a window whose maximum is positive both
        send its gradient to the same first maximum, and in any other window both
        send zeros. (Overlapping windows would add a -0.0 where the written order
        has +0.0, so they keep the written order.) The ReLU then sees a quarter of
        the values of a 2x2 pooling's input.

        Then a Conv2d directly followed by a MaxPool2d whose windows tile the image
        (and by the ReLU after it, if any) runs as one ``handgrad.nn.fused.ConvMaxPool``:
        the same results, with the convolution's rows in pooling order."""
        from handgrad.nn.activations import ReLU
        from handgrad.nn.fused import ConvMaxPool, fusable
        from handgrad.nn.pooling import MaxPool2d

        modules = list(self._modules.values())
        i = 0
        while i < len(modules) - 1:
            a, b = modules[i], modules[i + 1]
            if type(a) is ReLU and type(b) is MaxPool2d and b.commutes_with_relu():
                modules[i], modules[i + 1] = b, a
                i += 1
            i += 1
        fused: list[Module] = []
        known = self.__dict__.get("_fused", {})
        i = 0
        while i < len(modules):
            a = modules[i]
            if i + 1 < len(modules) and fusable(a, modules[i + 1]):
                relu = modules[i + 2] if i + 2 < len(modules) else None
                relu = relu if type(relu) is ReLU else None
                key = (a, modules[i + 1], relu)
                # the same fused module every step: it keeps its buffers
                fused.append(known.get(key) or ConvMaxPool(*key))
                i += 3 if relu is not None else 2
            else:
                fused.append(a)
                i += 1
        self.__dict__["_fused"] = {
            (m.conv, m.pool, m.relu): m for m in fused if isinstance(m, ConvMaxPool)
        }
        return fused

    def _key(self) -> tuple[tuple[Module, ...], tuple[object, ...]]:
        """What :meth:`_order` depends on: the modules (compared by identity), and the
        settings of those it may swap or fuse (a pooling's windows, a convolution's
        groups)."""
        modules = tuple(self._modules.values())
        settings = tuple(
            tuple(
                getattr(m, a, None)
                for a in ("kernel_size", "stride", "padding", "dilation", "groups")
            )
            for m in modules
            if m.__dict__.get("kernel_size") is not None
        )
        return modules, settings

    def _plan(self) -> list[Module]:
        """:meth:`_order`, worked out again only when the modules changed (an MLP's
        step spent 15 us on it)."""
        modules, settings = self._key()
        plan = self.__dict__.get("_plan_cache")
        if (
            plan is None
            or len(plan[0]) != len(modules)
            or any(a is not b for a, b in zip(plan[0], modules, strict=True))
            or plan[1] != settings
        ):
            plan = (modules, settings, self._order())
            self.__dict__["_plan_cache"] = plan
        return plan[2]

    def forward(self, x: np.ndarray) -> np.ndarray:
        order = self._plan()
        self._ran = order
        for module in order:
            x = module.forward(x)
        return x

    def _ran_order(self) -> list[Module]:
        return self.__dict__.get("_ran") or list(self._modules.values())

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for module in reversed(self._ran_order()):
            dout = module.backward(dout)
        return dout

    def backward_params(self, dout: np.ndarray) -> None:
        # Modules before the first one with parameters need no gradient at all,
        # and that one needs none w.r.t. its input.
        modules = self._ran_order()
        first = _first_with_parameters(modules)
        if first is None:
            return
        for module in reversed(modules[first + 1 :]):
            dout = module.backward(dout)
        modules[first].backward_params(dout)


def _first_with_parameters(modules: list[Module]) -> int | None:
    """The index of the first module that has parameters (in itself or below)."""
    for i, m in enumerate(modules):
        if m._parameters or any(True for _ in m.parameters()):
            return i
    return None
