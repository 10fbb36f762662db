"""Optional numba compilation for memmap's compiled kernels (``ilp/alloc.py``'s branch and bound,
``ilp/schedule_search.py``'s evaluator, ``rl/game.py``'s DMA-time kernel).

``compile_kernel`` compiles a function with numba (``nopython``, cached on disk, GIL released) when numba
is installed and returns it unchanged otherwise: the kernels are written in the subset of
Python that both run, with identical results. ``warn_interpreted`` warns once per kernel when
they run interpreted.
"""

from __future__ import annotations

import warnings

try:
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

BACKEND = "numba" if numba is not None else "python"
_warned: set[str] = set()


def compile_kernel(fn):
    """``numba.njit(cache=True, nogil=True)(fn)``, or ``fn`` itself without numba."""
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


def warn_interpreted(what: str, detail: str) -> None:
    """Without numba, warn once that ``what`` runs interpreted (``detail``: how much slower)."""
    if numba is None and what not in _warned:
        _warned.add(what)
        warnings.warn(f"numba is not installed: {what} runs interpreted, {detail} "
                      "(pip install numba==0.68.1)", RuntimeWarning, stacklevel=3)


__all__ = ["BACKEND", "compile_kernel", "numba", "warn_interpreted"]
