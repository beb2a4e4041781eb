"""The memory budget of the perturbation forwards (issue 22): how many perturbed images one forward takes.

``EngineSettings.memory_budget_mb`` (and its copies ``ExplainSettings.memory_budget_mb``,
``IrofSettings.memory_budget_mb``):

- ``None`` (the default): from the device, measured once per engine (at its first chunk, on the model's device).
  On CUDA: the device's free memory (``torch.cuda.mem_get_info``, plus the blocks PyTorch's caching allocator
  holds unused, which this process reuses) x ``gpu_share`` x ``SAFETY_FRACTION``. ``SAFETY_FRACTION`` = 0.5
  leaves room for what the activation estimate does not count: the clean forwards, the CAM backwards of the
  same unit, cuDNN workspaces and the allocator's fragmentation. ``gpu_share`` in (0, 1] is the fraction of
  the GPU this process may use (1: all of it; precompute's ``--gpus explain=0.25`` runs four explain units on
  one GPU, each with share 0.25). On any other device (CPU): ``CPU_BUDGET_MB`` = 1024 MB whatever the free RAM,
  and the share is not used: host RAM is shared by every worker of a CPU run (precompute's process pool, the
  app's sessions), so the free memory one worker sees is not its own to spend, and on CPU chunks of 16-32
  small images are the fastest anyway (cache).
- an int: that many MiB on any device (the former fixed budget was ``memory_budget_mb=1024``).

A chunk is ``min(max_chunk, max(1, budget // activation bytes per image))`` (``chunk_cap``). The budget and the
share are speed knobs outside ``ExplainSettings.key``: stores stay valid whatever they are.

Public API::

    device_budget_bytes(device, share=1.0)              # bytes from the device (CUDA: free x share x 0.5)
    b = memory_budget(device, memory_budget_mb, share)  # Budget(bytes, source); source explains it for the log
    chunk_cap(b.bytes, bytes_per_image, max_chunk)      # rows per forward
    check_gpu_share(share)                              # ValueError unless 0 < share <= 1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: fraction of the (shared) free GPU memory given to the perturbation chunks; see the module docstring
SAFETY_FRACTION = 0.5
#: the budget on CPU (MiB): host RAM is shared by the workers of a CPU run
CPU_BUDGET_MB = 1024
_GIB = 2**30


def check_gpu_share(share: float) -> float:
    """``share`` if it is a valid GPU share (0 < share <= 1), else a ValueError naming the valid range."""
    if not 0.0 < share <= 1.0:  # also rejects NaN
        raise ValueError(f"gpu_share must be in (0, 1] (the fraction of the GPU this process may use; 1: all of "
                         f"it), got {share!r}")
    return share


def _is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def cuda_free_bytes(device: torch.device | str) -> int:
    """Free bytes of a CUDA device for this process: the driver's free memory plus the blocks PyTorch's caching
    allocator reserved but does not use."""
    device = torch.device(device)
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free) + max(0, int(cached))


def device_budget_bytes(device: torch.device | str, share: float = 1.0) -> int:
    """The chunk budget in bytes a device gives: on CUDA, free memory x ``share`` x ``SAFETY_FRACTION``; on any
    other device ``CPU_BUDGET_MB`` MiB (``share`` is checked but not used)."""
    return memory_budget(device, None, share).bytes


@dataclass(frozen=True)
class Budget:
    """A chunk budget in bytes and where it came from (``source``, for the log)."""

    bytes: int
    source: str


def memory_budget(device: torch.device | str, memory_budget_mb: int | None, share: float = 1.0) -> Budget:
    """The budget of ``memory_budget_mb`` (MiB; None: from the device, see the module docstring)."""
    check_gpu_share(share)
    if memory_budget_mb is not None:
        n = int(memory_budget_mb) * 2**20
        return Budget(n, f"budget {n / _GIB:.1f} GiB = memory_budget_mb {memory_budget_mb}")
    if not _is_cuda(device):
        n = CPU_BUDGET_MB * 2**20
        return Budget(n, f"budget {n / _GIB:.1f} GiB = CPU default {CPU_BUDGET_MB} MB, host RAM being shared by "
                         f"a run's workers")
    free = cuda_free_bytes(device)
    n = int(free * share * SAFETY_FRACTION)
    return Budget(n, f"budget {n / _GIB:.1f} GiB = free {free / _GIB:.1f} GiB x share {share:g} "
                     f"x {SAFETY_FRACTION:g}")


def chunk_cap(budget_bytes: int, bytes_per_image: int, max_chunk: int) -> int:
    """Rows per forward: as many images as the budget holds, at least 1 and at most ``max_chunk``."""
    return int(min(max_chunk, max(1, budget_bytes // max(1, bytes_per_image))))
