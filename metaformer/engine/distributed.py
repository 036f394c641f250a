"""Process groups, devices and CPU threads: one CPU process, one GPU, or `torchrun` with many of either.

Under `torchrun` every rank runs run.py with the same overrides. Rank 0 owns the run folder; the other ranks tell
Hydra to write nothing (`worker_overrides`) and learn the folder from rank 0 (`broadcast_object`). Gloo serves
CPU runs, NCCL GPU runs. Metrics are summed over ranks with `all_reduce_sum`, so they are exact, not averaged.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def env_rank() -> int:
    """This process's global rank as `torchrun` set it (0 without torchrun)."""
    return int(os.environ.get("RANK", 0))


def worker_overrides() -> list[str]:
    """Hydra overrides that keep ranks other than 0 from writing a run folder, a .hydra/ copy or a log file."""
    if env_rank() == 0:
        return []
    return [f"hydra.run.dir={tempfile.gettempdir()}", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def resolve_device(name: str) -> torch.device:
    """The device `trainer.device` names: `auto` picks CUDA when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def init_distributed(device_name: str) -> DistInfo:
    """Join the `torchrun` process group when WORLD_SIZE > 1 and pick this rank's device."""
    device = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo(device=device)
    rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, local_world_size, device)


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all ranks (the tensor itself without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (picklable objects only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def split_threads(requested: int | None, parallel_jobs: int) -> int:
    """Torch threads for one process: `requested`, else the cores shared fairly between `parallel_jobs`."""
    if requested:
        return int(requested)
    return max(1, (os.cpu_count() or 1) // max(1, parallel_jobs))
