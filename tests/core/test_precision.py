"""What `auto` precision means on a CPU: bf16 only where the CPU's flags name fast bf16 and a probe confirms it."""

from __future__ import annotations

import logging

import pytest
import torch

from longshort.core import precision
from longshort.core.precision import CpuBf16


@pytest.fixture
def policy(monkeypatch):
    """Set the CPU policy for one test; the session's (fp32, conftest) comes back after it."""
    def set_(value: str) -> None:
        monkeypatch.setenv(precision.ENV, value)
        precision.cpu_dtype.cache_clear()
    yield set_
    precision.cpu_dtype.cache_clear()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\nbugs\t\t: none\n")
    assert {"amx_bf16", "avx2", "amx_tile"} <= precision.cpu_flags(info)
    assert precision.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(("flags", "fp32", "bf16", "fast"), [
    (("amx_bf16",), 60.0, 620.0, True),        # an AMX Xeon (issue 36's measurement)
    (("avx512_bf16",), 100.0, 150.0, False),   # flags but no real gain: below the 2x bar
    ((), None, None, False),                    # an AVX2 EPYC: no flags, no probe
])
def test_bf16_needs_the_flags_and_a_2x_probe(flags, fp32, bf16, fast):
    found = CpuBf16(flags, fp32, bf16)
    assert found.fast is fast
    assert ("no fast bf16" in found.describe()) is (not flags)


def test_auto_on_this_cpu_follows_its_probe_and_says_why(policy, caplog):
    policy("auto")
    with caplog.at_level(logging.INFO, logger="longshort"):
        dtype = precision.cpu_dtype()
    found = precision.probe()
    assert found.flags == tuple(f for f in precision.FAST_BF16_FLAGS if f in precision.cpu_flags())
    assert dtype == (torch.bfloat16 if found.fast else torch.float32)
    assert f"CPU precision auto -> {'bf16' if found.fast else 'fp32'}: {found.describe()}" in caplog.text
    if found.fast:  # a second measurement agrees with the probe: bf16 really is the faster one here
        assert precision.matmul_gflops(torch.bfloat16) > 1.5 * precision.matmul_gflops(torch.float32)
    assert precision.auto_dtype("cpu") == dtype
    assert precision.auto_dtype("cuda") == torch.bfloat16  # accelerators are not the CPU policy's business


def test_a_pinned_policy_wins_and_a_bad_one_is_named(policy):
    policy("bf16")
    assert precision.auto_dtype("cpu") == torch.bfloat16
    policy("fp32")
    assert precision.auto_dtype("cpu") == torch.float32
    policy("fast")
    with pytest.raises(ValueError, match=r"LONGSHORT_CPU_PRECISION='fast'; accepted: auto, fp32, bf16"):
        precision.cpu_dtype()
    with pytest.raises(ValueError, match="cpu_precision 'half'"):
        precision.set_policy("half")
