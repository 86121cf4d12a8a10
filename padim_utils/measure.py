"""Measuring a run: seconds (GPU work included), peak memory, and the machine it ran on.

    (model, seconds) = timed(Padim(cfg).fit, train)
    reset_peak_memory(device); ...; peak = peak_memory_bytes(device)     # GPU: torch's; CPU: the process's
    available_memory_bytes(device)                                       # what can still be allocated
    device_name(torch.device("cpu"))                                     # 'AMD EPYC ..., 2 threads'

>>> (value, seconds) = timed(sum, [1, 2, 3])
>>> value, seconds >= 0
(6, True)
"""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path

import torch

__all__ = ["timed", "cpu_name", "device_name", "peak_memory_bytes", "reset_peak_memory", "available_memory_bytes"]


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


def available_memory_bytes(device) -> int | None:
    """Bytes that can still be allocated on `device`, or None where it cannot be told: on CUDA the GPU's
    free memory plus what torch's allocator holds unused; on the CPU the system's available memory (Linux
    MemAvailable), lowered to what a cgroup memory limit (a container's) leaves, page cache counted free."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(found) if found else None


def _read_numbers(path: Path) -> dict[str, int]:
    """`name value` lines of a /proc or cgroup file as {name: value}; {} where it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
    return out


def _meminfo_available() -> int | None:
    return _read_numbers(Path("/proc/meminfo")).get("MemAvailable")


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this container's cgroup (v2: memory.max; v1: memory/memory.limit_in_bytes)
    less its usage without the inactive page cache; None without a limit."""
    for folder, limit, usage, cache in ((root, "memory.max", "memory.current", "inactive_file"),
                                        (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                         "total_inactive_file")):
        try:
            text = (folder / limit).read_text().strip()
            used = int((folder / usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if not text.isdigit() or int(text) >= 2**60:  # "max", or v1's "no limit" (about 2**63)
            return None
        used -= _read_numbers(folder / "memory.stat").get(cache, 0)
        return max(0, int(text) - used)
    return None
