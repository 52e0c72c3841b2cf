"""The library's exceptions and warnings, in one module every other module may import (no cycles).

``DataError``, ``SpecError`` and ``ModelError`` are ``ValueError`` subclasses whose messages name the column,
field or file and what to change. ``ConvergenceWarning`` is issued when a fit stops at ``max_iterations``
before reaching its tolerance; it subclasses scikit-learn's ``ConvergenceWarning`` when scikit-learn is
installed, so ``warnings.filterwarnings`` rules written for scikit-learn or glum also catch it. It is created
on first access: importing scikit-learn costs ~1 s (it pulls in pandas and scipy.stats), which every Spark
Python worker and every short command would otherwise pay for a class they never use.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data does not fit the spec; the message names the column and the problem."""


class SpecError(ValueError):
    """A GLMix spec is malformed; the message names the field and what to change."""


class ModelError(ValueError):
    """A saved model cannot be read or does not match the data; the message says which file and why."""


def _convergence_warning() -> type[Warning]:
    try:  # the scikit-learn / glum convention, without making scikit-learn a dependency
        from sklearn.exceptions import ConvergenceWarning as base
    except ImportError:  # pragma: no cover - scikit-learn is installed with the test extras
        base = UserWarning

    class ConvergenceWarning(base):
        """A fit stopped at ``max_iterations`` with its convergence measure still above the tolerance."""

    ConvergenceWarning.__module__, ConvergenceWarning.__qualname__ = __name__, "ConvergenceWarning"  # pickles by name
    return ConvergenceWarning


def __getattr__(name: str):
    if name == "ConvergenceWarning":
        cls = globals()["ConvergenceWarning"] = _convergence_warning()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
