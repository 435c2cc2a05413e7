"""Which backend runs a call: the Numba kernels or the NumPy reference.

``backend=None`` means the default: ``"numba"``, or ``"numpy"`` where the environment
variable ``FASTBP_BACKEND=numpy`` is set when fastbp is imported. Where Numba cannot be
imported, every call runs on NumPy, after one warning.
"""

from __future__ import annotations

import importlib
import os
import warnings

BACKENDS = ("numba", "numpy")

_default = os.environ.get("FASTBP_BACKEND", "").strip().lower() or "numba"
_numba_failure = None  # the ImportError, once Numba has failed to import
_modules = {}


def default():
    """The backend used when a call passes ``backend=None``."""
    return _default


def _check(backend):
    if backend not in BACKENDS:
        where = "" if backend is not _default else " (from FASTBP_BACKEND)"
        raise ValueError(f"unknown backend {backend!r}{where}: expected one of {BACKENDS}")


def kernels(backend, name):
    """The kernel module ``fastbp.kernels.<name>``, or None to run the NumPy reference.

    Imports the module on first use, so ``import fastbp`` does not import Numba.
    """
    if backend is None:
        backend = _default
    if backend == "numba":
        module = _modules.get(name)
        if module is not None:
            return module
        if _numba_failure is None:
            return _import(name)
        return None
    _check(backend)
    return None


def _import(name):
    global _numba_failure
    try:
        import numba  # noqa: F401
    except ImportError as error:
        _numba_failure = error
        warnings.warn(
            f"Numba could not be imported ({error}); fastbp runs on the NumPy backend",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    module = importlib.import_module(f"fastbp.kernels.{name}")
    _modules[name] = module
    return module
