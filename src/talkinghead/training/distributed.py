"""Process-group plumbing for torchrun/DDP (the one place that knows about ranks).

Launch with ``torchrun --nproc_per_node N -m talkinghead.cli train ...``; a plain
``talkinghead train`` is a world of one. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; choose this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    chosen = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, chosen)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (in place); identity in a world of one."""
    if is_distributed():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def all_gather_rows(indices: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's (indices [n], rows [n,D]); all ranks send the same n."""
    if not is_distributed():
        return indices, rows
    world = dist.get_world_size()
    gathered_indices = [torch.empty_like(indices) for _ in range(world)]
    gathered_rows = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(gathered_indices, indices)
    dist.all_gather(gathered_rows, rows)
    return torch.cat(gathered_indices), torch.cat(gathered_rows)


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank says True (e.g. a stop signal reached one process)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
