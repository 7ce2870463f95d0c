"""What ``precision: auto`` (trainers) and ``dtype: auto`` (engines) mean on a CPU.

A CPU with AMX or AVX512-BF16 multiplies bfloat16 matrices several times faster than float32 (an Intel Xeon with
AMX: ~10x); one without emulates bfloat16 and is far slower (an AMD EPYC Zen 3 through torch: ~100x slower). So on a
CPU ``auto`` is bf16 only where the CPU's flags name fast bf16 *and* a short matrix-product probe confirms it (the
kernels in use may be capped: ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AMX machine compute like an older one). The probe
runs once per process and its result is logged. The run config's ``cpu_precision`` (``auto``, ``fp32``, ``bf16``)
sets the policy for every process of a run through ``LONGSHORT_CPU_PRECISION``, which Ray actors inherit; the
embedded default pins ``fp32`` so its numbers hold on every CPU.

Training in bf16 keeps fp32 master weights and optimizer state (DeepSpeed's bf16 path, ZeRO >= 1).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads where a dtype is asked for: the CLI's config commands do without it
    import torch

log = logging.getLogger("longshort")

ENV = "LONGSHORT_CPU_PRECISION"
POLICIES = ("auto", "fp32", "bf16")
FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_SPEEDUP = 2.0  # bf16 must beat fp32 by this much: fast bf16 is ~10x, emulated bf16 is far below 1x


@dataclass(frozen=True)
class CpuBf16:
    """Why a CPU computes in bf16 or not: its fast-bf16 flags and, where it has some, the probe's throughputs."""

    flags: tuple[str, ...]
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None

    @property
    def speedup(self) -> float | None:
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops and self.bf16_gflops is not None else None

    @property
    def fast(self) -> bool:
        return bool(self.flags) and self.speedup is not None and self.speedup >= MIN_SPEEDUP

    def describe(self) -> str:
        if not self.flags:
            return f"no fast bf16 on this CPU (none of {', '.join(FAST_BF16_FLAGS)} in its flags)"
        return (f"CPU flags {', '.join(self.flags)}; probe: a matrix product at {self.bf16_gflops:.0f} GFLOP/s in bf16 "
                f"against {self.fp32_gflops:.0f} in fp32 ({self.speedup:.1f}x; bf16 needs >= {MIN_SPEEDUP}x)")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def matmul_gflops(dtype: torch.dtype, n: int = 512, seconds: float = 0.05) -> float:
    """Throughput of an ``n x n`` matrix product in ``dtype`` on this process's threads (after one warm-up)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


@functools.cache
def probe() -> CpuBf16:
    """This CPU's fast-bf16 flags, confirmed by a probe where there are any (~0.1 s; once per process)."""
    import torch

    flags = tuple(f for f in FAST_BF16_FLAGS if f in cpu_flags())
    if not flags:
        return CpuBf16(flags)
    return CpuBf16(flags, matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16))


def policy() -> str:
    value = os.environ.get(ENV, "auto")
    if value not in POLICIES:
        raise ValueError(f"{ENV}={value!r}; accepted: {', '.join(POLICIES)} (the run config's cpu_precision sets it)")
    return value


def set_policy(value: str) -> None:
    """Make ``value`` the CPU policy of this process and of the Ray actors it starts (``topology`` passes it on)."""
    if value not in POLICIES:
        raise ValueError(f"cpu_precision {value!r}; accepted: {', '.join(POLICIES)}")
    os.environ[ENV] = value
    cpu_dtype.cache_clear()


def is_bf16(value: str) -> bool:
    """Whether the CPU policy ``value`` computes in bf16 on this machine."""
    return value == "bf16" or (value == "auto" and probe().fast)


def decided(value: str) -> str:
    """``value`` with ``auto`` replaced by this process's decision (``bf16`` or ``fp32``): what a run passes to its Ray
    actors, so that every process of a run computes alike. Each actor probing for itself disagreed under load (seen:
    two SFT ranks started together, one probing bf16 at 0.9x fp32 and training in fp32, the other at 2.2x in bf16)."""
    if value != "auto":
        return value
    return "bf16" if is_bf16(value) else "fp32"


@functools.cache
def cpu_dtype() -> torch.dtype:
    """The dtype ``auto`` means on a CPU in this process, logged once."""
    import torch

    chosen = policy()
    bf16 = is_bf16(chosen)  # the one decision rule (fingerprints ask it too)
    if chosen == "auto":
        log.info("CPU precision auto -> %s: %s", "bf16" if bf16 else "fp32", probe().describe())
    elif chosen == "bf16" and not probe().fast:
        log.warning("cpu_precision bf16 on a CPU without fast bf16 (%s): expect it to run slower than fp32",
                    probe().describe())
    return torch.bfloat16 if bf16 else torch.float32


def auto_dtype(device: torch.device | str, gpu: torch.dtype | None = None) -> torch.dtype:
    """What ``auto`` means on ``device``: ``gpu`` (default bf16) on an accelerator, :func:`cpu_dtype` on a CPU."""
    import torch

    if torch.device(device).type == "cpu":
        return cpu_dtype()
    return gpu or torch.bfloat16
