"""The one place that sets the JIT policy for every kernel in the package.

- ``cache=True``: compiled machine code is written next to the module, so only the first
  process on a machine pays for compilation (seconds per kernel); later ones load it.
- ``nogil=True``: the trainer runs parsing and learning in two threads; kernels that keep
  the GIL would serialise them.
- ``boundscheck=False``: indices are validated in Python before a kernel runs; kernels
  never raise.
- ``error_model="numpy"``: a division by zero gives inf/nan instead of raising, so the
  hot loops carry no exception branches.
- no ``fastmath``: update kernels must reproduce the dense reference to the last bits, and
  fastmath reassociates sums.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

_POLICY: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "boundscheck": False,
    "error_model": "numpy",
}


def kernel(fn: F) -> F:
    """Compile ``fn`` with the project's JIT policy (lazily, on first call)."""
    return numba.njit(**_POLICY)(fn)  # type: ignore[no-any-return]


def inline_kernel(fn: F) -> F:
    """A small helper that callers inline (hash rounds, table probes, emitting a feature).

    LLVM inlines it (it is compiled into each caller's module); Numba's own IR-level
    inlining (``inline="always"``) is not used: it turns each array argument into a new
    reference, so every call paid atomic reference-count updates (for ``emit``, two per
    parsed feature: half of the Criteo parse time)."""
    return numba.njit(**_POLICY)(fn)  # type: ignore[no-any-return]
