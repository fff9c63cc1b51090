"""Which device each worker runs on, checked before any worker starts (part of the configuration: it reads the
device options and the machine, nothing else)."""
from __future__ import annotations

import torch

from extractors.config import RunConfig
from io_utils.errors import UsageError


def worker_devices(config: RunConfig) -> list[str]:
    """``--device_ids 0 1`` -> cuda:0, cuda:1; ``--cpu --num_workers N`` -> N CPU workers. The CUDA devices are
    checked here, in the main process, so a wrong list stops the run with one line before any worker starts."""
    if config.cpu:
        return ["cpu"] * config.num_workers
    if not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; pass --cpu to run on the CPU")
    count = torch.cuda.device_count()
    missing = [device_id for device_id in config.device_ids if not 0 <= device_id < count]
    if missing:
        raise UsageError(f"--device_ids {' '.join(map(str, missing))}: this machine has {count} CUDA device(s), "
                         f"numbered 0 to {count - 1}")
    return [f"cuda:{device_id}" for device_id in config.device_ids]


def default_device(config: RunConfig) -> torch.device:
    """The device of an extractor made from Python without one: the CPU with ``--cpu``, else the first of
    ``--device_ids`` (checked as for a run)."""
    return torch.device(worker_devices(config)[0] if not config.cpu else "cpu")


def device_problem(device: torch.device) -> str | None:
    """Why ``device`` cannot be used any more, if it cannot: asked after a video failed on it. After an illegal
    memory access or a device-side assert, every later CUDA call in the process fails with the same error, so
    the worker must be replaced rather than fail every video after that one. (Out of memory leaves the device
    usable: its cache is emptied for the next video.)"""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
        (torch.ones(1, device=device) + 1).item()
    except Exception as error:  # torch.AcceleratorError, RuntimeError: whatever the driver said
        return f"{type(error).__name__}: {error}".splitlines()[0]
    torch.cuda.empty_cache()
    return None
