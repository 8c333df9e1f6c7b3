"""The user's own model, on which every lower bound's witness pair is checked.

A lower bound is the ratio of a real pair of inputs on the network lipkit imported. If the
import missed anything (a parameter of an activation, an op), that pair would not attain
its value on the model the user has. So after each lower-bound method, the pair is
evaluated again on the source itself:

- a ``torch.nn.Module``: a float64 copy of it (``copy.deepcopy(model).double()``, in eval
  mode), whose ratio must reach the reported value to a relative ``1e-6`` (a
  parametrization recomputed in float64 may move weights by float32 rounding); within that,
  a lower bound whose pair does a little less on the model than on the imported network
  (that rounding, or a documented difference such as Softplus's threshold) is lowered to
  what the model attains, deflated by the same factor that the method's rounding proof
  took off the network's ratio: the value reported is the model's, never the import's;
- an ONNX file: onnxruntime, in the file's own precision: both outputs must agree with the
  imported network's to that precision (``1e-4`` of the outputs' scale for float32);
- a ``Network`` or a ``.mat`` weight file: the network is the model; nothing more to check.

A pair that fails makes its Bound ``failed`` (shown, never used), with both numbers.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipkit.estimate.network import DTYPE, Network

#: relative agreement asked of a float64 copy of a torch model
TORCH_TOLERANCE = 1e-6
#: agreement asked of a float32 ONNX evaluation, relative to the outputs' scale
FLOAT32_TOLERANCE = 1e-4


class ModelReference:
    """Evaluates witness pairs on the model a user gave (see the module docstring)."""

    def __init__(self, source, network: Network):
        self.source = source
        self.network = network
        self._module = None
        self._session = None

    def _torch_module(self) -> nn.Module | None:
        if self._module is None:
            try:
                module = copy.deepcopy(self.source).double().eval()
            except Exception:  # a model that cannot be copied or converted: no float64 check
                return None
            self._module = module
        return self._module

    def _onnx_session(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self._session = onnxruntime.InferenceSession(
                str(self.source), options, providers=["CPUExecutionProvider"])
        return self._session

    def check(self, first: torch.Tensor, second: torch.Tensor, value: float,
              norm: str) -> str | None:
        """None when the pair attains ``value`` on the source, else the reason it does not."""
        return self.attained(first, second, value, norm)[0]

    def attained(self, first: torch.Tensor, second: torch.Tensor, value: float,
                 norm: str) -> tuple[str | None, float]:
        """``(reason, value)``: the reason the pair does not attain ``value`` on the source
        (None if it does), and the value it supports there (``value``, or lower: see the
        module docstring)."""
        if isinstance(self.source, nn.Module):
            return self._check_torch(first, second, value, norm)
        if isinstance(self.source, str | Path) and Path(self.source).suffix.lower() == ".onnx":
            return self._check_onnx(first, second), value
        return None, value

    @torch.no_grad()
    def _check_torch(self, first, second, value: float, norm: str) -> tuple[str | None, float]:
        module = self._torch_module()
        if module is None:
            return None, value
        from lipkit.estimate.witness import vector_norm

        shape = (1, *self.network.input_shape)
        x1, x2 = first.reshape(shape).to(DTYPE), second.reshape(shape).to(DTYPE)
        try:
            y1, y2 = module(x1), module(x2)
        except Exception as error:
            return (f"the model fails on the witness pair ({type(error).__name__}: {error})",
                    value)
        separation = float(vector_norm(x1 - x2, norm)[0])
        if not separation > 0:
            return (None if value <= 0 else "the witness pair is one point"), value
        ratio = float(vector_norm((y1 - y2).reshape(1, -1), norm)[0]) / separation
        if not ratio >= value * (1 - TORCH_TOLERANCE):
            return (f"the witness pair's ratio on the model is {ratio:.9g}, below the "
                    f"{value:.9g} it has on the imported network (the import does not match "
                    "the model)"), value
        imported = float(vector_norm((self.network.forward(x1) - self.network.forward(x2))
                                     .reshape(1, -1), norm)[0]) / separation
        if math.isfinite(imported) and ratio < imported:
            # the method proved value <= (the network's true ratio), deflating the network's
            # float64 ratio by its rounding bound; the model's float64 ratio is deflated by
            # the same factor (the same operations, so the same rounding), and a little more
            value = min(value, ratio * min(value / imported, 1.0) * (1 - 1e-12))
        return None, value

    def _check_onnx(self, first, second) -> str | None:
        try:
            session = self._onnx_session()
        except Exception:
            return None
        description = session.get_inputs()[0]
        dtype = np.float64 if "double" in description.type else np.float32
        for point in (first, second):
            x = point.reshape(1, *self.network.input_shape).to(DTYPE)
            expected = self.network.forward(x).detach().numpy().reshape(-1)
            try:
                (got, *_) = session.run(None, {description.name: x.numpy().astype(dtype)})
            except Exception:
                return None
            got = np.asarray(got, dtype=np.float64).reshape(-1)
            if got.shape != expected.shape:
                return None
            scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
            tolerance = (FLOAT32_TOLERANCE if dtype == np.float32 else 1e-9) * scale
            worst = float(np.abs(got - expected).max(initial=0.0))
            if not worst <= tolerance or not math.isfinite(worst):
                return (f"onnxruntime's output at the witness differs from the imported "
                        f"network's by {worst:.3g} (tolerance {tolerance:.3g}): the import "
                        "does not match the file")
        return None
