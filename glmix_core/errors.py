"""The library's exceptions and warnings, in one module every other module may import (no cycles).

``DataError``, ``SpecError`` and ``ModelError`` are ``ValueError`` subclasses whose messages name the column,
field or file and what to change. ``ConvergenceWarning`` is issued when a fit stops at ``max_iterations``
before reaching its tolerance; it subclasses scikit-learn's ``ConvergenceWarning`` when scikit-learn is
installed, so ``warnings.filterwarnings`` rules written for scikit-learn or glum also catch it.
"""

from __future__ import annotations

try:  # the scikit-learn / glum convention, without making scikit-learn a dependency
    from sklearn.exceptions import ConvergenceWarning as _BaseConvergenceWarning
except ImportError:  # pragma: no cover - scikit-learn is installed with the test extras
    _BaseConvergenceWarning = UserWarning


class DataError(ValueError):
    """Input data does not fit the spec; the message names the column and the problem."""


class SpecError(ValueError):
    """A GLMix spec is malformed; the message names the field and what to change."""


class ModelError(ValueError):
    """A saved model cannot be read or does not match the data; the message says which file and why."""


class ConvergenceWarning(_BaseConvergenceWarning):
    """A fit stopped at ``max_iterations`` with its convergence measure still above the tolerance."""
