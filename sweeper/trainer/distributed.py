"""Processes and devices: one process, or several joined by torch.distributed.

The trainer joins an existing process group when one is initialised (torchrun, Ray Train, a test)
and otherwise starts one from the usual environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); a single process needs none of it. Backend: nccl on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from sweeper.trial import Parallelism, Precision


@dataclass(frozen=True, slots=True, kw_only=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this module started the process group, so it also ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={requested!r} but this torch build sees no CUDA device: "
                               "set device to 'cpu' or 'auto'")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    return torch.device("cpu")


def start(requested_device: str) -> Processes:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = False
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
    elif world_size > 1:
        device = resolve_device(requested_device, local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    device = resolve_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank = dist.get_rank() if world_size > 1 else 0
    return Processes(rank=rank, world_size=world_size, device=device, owns_group=owns_group)


def stop(procs: Processes) -> None:
    if procs.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, procs: Processes, parallelism: Parallelism, precision: Precision) -> nn.Module:
    """Replicate (DDP) or shard (FSDP2) the model across processes; a single process gets it as is."""
    if not procs.distributed:
        return model
    if parallelism == "ddp":
        ids = [procs.device.index] if procs.device.type == "cuda" else None
        # the only buffers are the constant rotary tables: broadcasting them each forward is waste
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if precision == "bf16" and procs.device.type == "cuda":
        # gather weights in bf16 (half the traffic), reduce gradients in fp32 (no precision loss)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:  # type: ignore[union-attr]
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def set_grad_sync(model: nn.Module, sync: bool) -> None:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = sync  # what no_sync() toggles; works under compile
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)  # FSDP2


def all_reduce_sum(t: torch.Tensor, procs: Processes) -> torch.Tensor:
    if procs.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any, procs: Processes) -> list[Any]:
    if not procs.distributed:
        return [obj]
    out: list[Any] = [None] * procs.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, procs: Processes) -> Any:
    if not procs.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(procs: Processes) -> None:
    if procs.distributed:
        dist.barrier()
