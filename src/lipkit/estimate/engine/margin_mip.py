"""The exact minimum of a linear function of the output over a box, by mixed-integer
programming on the relaxations' MIP rows (the complete check behind the local certificates'
benchmark: Tjeng, Xiao & Tedrake, ICLR 2019).

Variables: the input ``x`` in the box, every hidden pre-activation ``z = W h + b`` (rows)
and its activation ``h = phi(z)`` by :meth:`PiecewiseLinearRelaxation.mip_rows` (a stable
neuron's side, else one binary and big-M rows from the engine's proven bounds). The
objective ``c . f(x)`` is minimized by HiGHS. Its answer is trusted to HiGHS's tolerances
(feasibility 1e-7): a proof for benchmarks, not a float64 certificate. A point with a
negative value is checked by a float64 forward pass with its rounding
(:func:`lipkit.estimate.rounding.forward_error`) before it counts as a counterexample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse

from lipkit.estimate.engine.chain import DenseChain
from lipkit.estimate.engine.forward import LayerBounds
from lipkit.estimate.solvers import new_highs


@dataclass
class MarginMinimum:
    """The solver's proven lower bound on the minimum, the best value found and its point,
    and whether it finished."""

    lower: float
    value: float
    point: np.ndarray | None
    optimal: bool
    seconds: float


class _Rows:
    """A HiGHS model grown block by block."""

    def __init__(self, highs):
        self.highs, self.count = highs, 0

    def variables(self, lower, upper, integer=False) -> np.ndarray:
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        start = self.count
        self.highs.addVars(len(lower), lower, upper)
        self.count += len(lower)
        index = np.arange(start, self.count, dtype=np.int32)
        if integer and len(index):
            self.highs.changeColsIntegrality(len(index), index,
                                             np.ones(len(index), dtype=np.uint8))
        return index

    def rows(self, blocks, lower, upper) -> None:
        """``lower <= sum_b M_b x[index_b] <= upper`` (dense blocks)."""
        count = len(lower)
        parts = []
        for matrix, index in blocks:
            matrix = scipy.sparse.coo_matrix(np.broadcast_to(matrix, (count, len(index))))
            parts.append(scipy.sparse.csr_matrix((matrix.data, (matrix.row, index[matrix.col])),
                                                 shape=(count, self.count)))
        total = sum(parts[1:], parts[0]).tocsr()
        total.eliminate_zeros()
        self.highs.addRows(count, np.asarray(lower, float), np.asarray(upper, float),
                           total.nnz, total.indptr.astype(np.int32),
                           total.indices.astype(np.int32), total.data.astype(float))


def minimize(chain: DenseChain, row: np.ndarray, bounds: LayerBounds, time_limit: float,
             stop_below: float | None = 0.0) -> MarginMinimum:
    """``min c . f(x)`` over the first box of ``bounds`` (module docstring). ``stop_below``:
    stop as soon as a value below it is found."""
    started = time.perf_counter()
    highs = new_highs()
    model = _Rows(highs)
    lower = bounds.input_lower[0].numpy()
    upper = bounds.input_upper[0].numpy()
    h = model.variables(lower, upper)
    x = h
    for k, layer in enumerate(chain.hidden):
        low, high = bounds.lower[k][0].numpy(), bounds.upper[k][0].numpy()
        width = layer.outputs
        z = model.variables(low, high)
        model.rows([(np.eye(width), z), (-layer.weight.numpy(), h)], layer.bias.numpy(),
                   layer.bias.numpy())
        h = layer.activation.mip_rows(model, z, low, high)
    output = chain.layers[-1]
    coefficients = row @ output.weight.numpy()
    constant = float(row @ output.bias.numpy())
    highs.changeColsCost(len(h), h, coefficients)
    highs.changeObjectiveSense(highspy.ObjSense.kMinimize)
    highs.setOptionValue("time_limit", max(float(time_limit), 0.01))
    highs.setOptionValue("mip_rel_gap", 1e-6)
    if stop_below is not None:  # stop at the first point below it
        highs.setOptionValue("objective_target", float(stop_below - constant))
    highs.run()
    status, info = highs.getModelStatus(), highs.getInfo()
    point = None
    value = np.inf
    if info.primal_solution_status == 2:
        solution = np.asarray(highs.getSolution().col_value)
        point = solution[x]
        value = float(info.objective_function_value) + constant
    bound = float(info.mip_dual_bound) + constant
    optimal = status == highspy.HighsModelStatus.kOptimal
    return MarginMinimum(bound, value, point, optimal, time.perf_counter() - started)
