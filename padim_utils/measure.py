"""Measuring a run: seconds (GPU work included), peak memory, and the machine it ran on.

    (model, seconds) = timed(Padim(cfg).fit, train)
    reset_peak_memory(device); ...; peak = peak_memory_bytes(device)     # GPU: torch's; CPU: the process's
    device_name(torch.device("cpu"))                                     # 'AMD EPYC ..., 2 threads'

>>> (value, seconds) = timed(sum, [1, 2, 3])
>>> value, seconds >= 0
(6, True)
"""

from __future__ import annotations

import platform
import resource
import time

import torch

__all__ = ["timed", "cpu_name", "device_name", "peak_memory_bytes", "reset_peak_memory"]


def timed(fn, *args, **kwargs):
    """(result, seconds), synchronising CUDA so GPU work is counted."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def device_name(device: torch.device) -> str:
    """A human name for the device timings were taken on: the GPU's, or the CPU's with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by torch on CUDA; the process's peak resident memory on the CPU: on Linux
    its VmHWM, which `reset_peak_memory` restarts (getrusage's ru_maxrss would also count the peak of the
    process that started this one), elsewhere ru_maxrss."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_memory(device: torch.device) -> bool:
    """Start `peak_memory_bytes` afresh from now: torch's peak statistics on CUDA; on Linux CPUs the
    process's peak resident memory (writing 5 to /proc/self/clear_refs). False where it cannot be reset
    (then the peak is the whole process's so far)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
