"""Optional Triton import shared by the kernel modules.

Triton is an optional dependency (``pip install trillium-kvcompress[triton]``). Kernels are defined only
when it imports; every public entry point has a torch path with the same semantics, so the library works
without it. On machines without a GPU the kernels run under the Triton interpreter, which must be enabled
(``TRITON_INTERPRET=1``) before this module is first imported.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

__all__ = ["next_power_of_two", "require_triton", "tl", "triton", "triton_available", "use_triton_for"]


def triton_available() -> bool:
    """True when triton imported successfully."""
    return triton is not None


def interpreter_enabled() -> bool:
    """True when the Triton interpreter (CPU execution of kernels) is switched on."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def require_triton(tensor: torch.Tensor) -> None:
    """Raise a clear error when a Triton launcher cannot run on ``tensor``'s device."""
    if triton is None:
        raise RuntimeError("triton is not installed: install trillium-kvcompress[triton]")
    if not tensor.is_cuda and not interpreter_enabled():
        raise RuntimeError("Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 set before import")


def use_triton_for(tensor: torch.Tensor) -> bool:
    """Dispatch rule of every kernel: Triton on CUDA tensors, the torch path everywhere else."""
    return triton is not None and tensor.is_cuda


def next_power_of_two(value: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(value, minimum); ``tl.arange`` and ``tl.dot`` need such sizes."""
    size = minimum
    while size < value:
        size *= 2
    return size
