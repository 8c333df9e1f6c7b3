"""HiGHS for the methods that solve LPs and MIPs, and the one reading of its statuses.

A solver's answer is used only when its status says what it means: ``optimal`` (the value
is the optimum to the solver's tolerances), ``infeasible`` (for an LP that asks whether a
region has an interior point: it has none), or a clean limit (time, nodes, iterations: the
MIP's dual bound is still proven). Any other status (unknown, numerical trouble, unbounded
where that cannot be, a model error) raises :class:`SolverError`, so the method's Bound is
``failed`` and never enters an interval.
"""

from __future__ import annotations

import os
import sys

import highspy

from lipkit.errors import LipkitError

_STATUS = highspy.HighsModelStatus
#: the statuses whose MIP dual bound is proven (HiGHS stops cleanly at a limit)
LIMITS = (_STATUS.kTimeLimit, _STATUS.kIterationLimit, _STATUS.kSolutionLimit,
          _STATUS.kInterrupt)


class SolverError(LipkitError, ArithmeticError):
    """A solver ended with a status whose answer cannot be used."""


_scheduler_threads = [1]  # the thread count every instance made here asks for


def new_highs(threads: int | None = None) -> highspy.Highs:
    """A silent HiGHS instance (its constructor prints a banner on file descriptor 1, which
    would corrupt ``lipkit estimate --json``).

    HiGHS sizes one global thread scheduler at its first solve in a process, and a later
    instance asking for another count fails to run (status "Not Set"): a margin LP read as
    "no interior point" would then prune a region unsoundly. So every instance made here
    asks for the same count (1, or the last one given as ``threads``, which resets the
    scheduler first); :func:`restore_threads` goes back to 1."""
    if threads is not None and int(threads) != _scheduler_threads[0]:
        highspy.Highs.resetGlobalScheduler(True)
        _scheduler_threads[0] = int(threads)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            highs = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", _scheduler_threads[0])
    return highs


def restore_threads() -> None:
    """Back to one thread for the instances made after a multi-threaded solve."""
    if _scheduler_threads[0] != 1:
        highspy.Highs.resetGlobalScheduler(True)
        _scheduler_threads[0] = 1


def feasible(highs: highspy.Highs, what: str) -> bool:
    """After ``run()`` of an LP: True when optimal, False when infeasible; raises
    :class:`SolverError` (naming ``what``) for any other status."""
    status = highs.getModelStatus()
    if status == _STATUS.kOptimal:
        return True
    if status == _STATUS.kInfeasible:
        return False
    raise SolverError(f"HiGHS ended the {what} with status "
                      f"'{highs.modelStatusToString(status)}'; its answer is not used")


def mip_status_usable(highs: highspy.Highs, what: str) -> bool:
    """After ``run()`` of a MIP: True when optimal, False at a clean limit (the dual bound is
    proven, the optimum not reached); raises :class:`SolverError` otherwise."""
    status = highs.getModelStatus()
    if status == _STATUS.kOptimal:
        return True
    if status in LIMITS:
        return False
    raise SolverError(f"HiGHS ended the {what} with status "
                      f"'{highs.modelStatusToString(status)}'; its bound is not used")
