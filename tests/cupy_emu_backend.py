"""The ``cupy`` backend without a GPU: :class:`CupyBackend` over NumPy arrays, its kernels
compiled for the CPU from the unchanged ``cupy_kernels.cu`` (see ``cuda_emu``).

``FASTMLP_EMU_SANITIZE=1`` builds the emulated kernels with AddressSanitizer (the process must
preload libasan: ``tests/test_cupy_asan.py`` does it in a subprocess).
"""

from __future__ import annotations

import os

import numpy as np
from cuda_emu.emu import EmuModule

from fastmlp.backends.cupy_backend import KERNEL_SOURCE, CupyBackend

SANITIZE = os.environ.get("FASTMLP_EMU_SANITIZE", "") == "1"

#: launch shapes that stress the indexing: grids far smaller than the data (grid-stride loops
#: go round many times), odd block sizes, 2-D blocks that are not multiples of a warp
TINY_LAUNCH = dict(block=37, row_block=19, max_grid=3, dense_backward_block=(5, 3))


def emu_module(code: str, name_expressions) -> EmuModule:
    return EmuModule(code, name_expressions, KERNEL_SOURCE, sanitize=SANITIZE)


def emulated_backend(name: str = "cupy_emulated", **launch) -> CupyBackend:
    """A :class:`CupyBackend` whose ``xp`` is NumPy and whose kernels run on the CPU."""
    return CupyBackend(xp=np, module_factory=emu_module, name=name, device="cpu", **launch)
