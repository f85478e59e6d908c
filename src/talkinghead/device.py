"""Where the networks run and in which precision: the one place that resolves ``--device`` and
``--precision`` for every command, the web page, the demo and the Python API.

Devices: ``auto`` (CUDA, else Apple's MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
A device that is absent is a one-line :class:`UserError`, raised before any network is loaded.

Precisions: ``auto``, ``fp32``, ``bf16``, ``fp16``. bf16 autocast pays only where the hardware
computes in bf16: a CUDA GPU with bf16 (Ampere and later), or a CPU with AVX-512 BF16 or AMX.
Elsewhere PyTorch emulates it, and on a 2-core AVX2 EPYC bf16 rendered 7x *slower* than fp32
(1.5 vs 10.9 frames/s, bench/animate.py). So ``auto`` picks bf16 only there and fp32 otherwise
(MPS included: not measured; training keeps fp32 on every CPU); ``fp16`` is CUDA only; bf16
asked for on a CPU without native bf16 still runs, with one warning per process. The torch
import is deferred to the functions, so the CLI can check a device name before loading torch.
"""

from __future__ import annotations

import functools
import platform
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from talkinghead.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU flags (Linux /proc/cpuinfo names) shown next to benchmark figures; the last two are the
# native bf16 instructions that make bf16 autocast pay on a CPU.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_fp16", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class SlowPrecisionWarning(UserWarning):
    """bf16 asked for where the hardware only emulates it."""


def check_device_name(name: str) -> str:
    """The normalised device name, or a UserError; needs no torch (the CLI checks it first)."""
    normalised = str(name).strip().lower()
    if not _DEVICE_NAME.fullmatch(normalised):
        raise UserError(f"unknown device {name!r} (use {DEVICES})")
    return normalised


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``; a one-line UserError when it is not on this machine."""
    import torch

    name = check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise UserError("--device mps: Apple's Metal (MPS) is not available here; use auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no CUDA GPU visible"
        raise UserError(
            f"--device {name}: CUDA is not available (torch {torch.__version__}, {build}); "
            "use --device cpu or auto"
        )
    device = torch.device(name)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _cpuinfo(keys: tuple[str, ...]) -> str:
    """The first value of one of ``keys`` in /proc/cpuinfo; "" where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them; empty where /proc/cpuinfo is absent."""
    return frozenset(_cpuinfo(("flags", "Features")).split())  # x86, Arm


def cpu_vector_extensions() -> list[str]:
    """The flags of :data:`VECTOR_FLAGS` this CPU has (what decides CPU speed and bf16)."""
    flags = cpu_flags()
    return [flag for flag in VECTOR_FLAGS if flag in flags]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX) and torch's kernels use
    AVX-512 (``torch.backends.cpu.get_cpu_capability()``); Arm CPUs: False (not measured)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith("AVX512") and bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def cpu_summary() -> dict:
    """What benchmarks print and save beside every figure."""
    import torch

    return {
        "cpu_model": _cpuinfo(("model name",)) or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vector_extensions": cpu_vector_extensions(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }


def resolve_precision(precision: str, device: torch.device, training: bool = False) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` on ``device`` (see the module notes).

    ``training``: ``auto`` keeps fp32 on a CPU even with native bf16. CPU training is for tests
    and small runs, where bit-for-bit comparisons (DDP against one process, the bundled model's
    recipe) hold only in fp32; ``bf16`` still asks for it.
    """
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp32"
        if precision == "bf16" and not bf16_ok:
            raise UserError(f"--precision bf16: {device} has no bf16; use fp16 or fp32")
        return precision
    if precision == "fp16":
        raise UserError(
            f"--precision fp16 needs a CUDA device, not {device.type}; use bf16 or fp32"
        )
    if device.type != "cpu":  # MPS: bf16 when asked, fp32 by default
        return "fp32" if precision == "auto" else precision
    native = cpu_has_native_bf16()
    if precision == "auto":
        return "bf16" if native and not training else "fp32"
    if precision == "bf16" and not native:
        _warn_emulated_bf16()
    return precision


@functools.cache  # once per process
def _warn_emulated_bf16() -> None:
    warnings.warn(
        "--precision bf16 on a CPU without AVX-512 BF16 or AMX: emulated, several times slower "
        "than fp32 (use --precision auto)",
        SlowPrecisionWarning,
        stacklevel=3,
    )


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32 (no autocast)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# glibc's malloc serves blocks over its mmap threshold with fresh mmaps and hands freed memory
# at the heap's top back to the system past its trim threshold. A rendered batch allocates and
# frees many 1-16 MB activations per layer, so every layer paid page faults on new memory: one
# 128 px encoder block ran 2.2x faster with both thresholds raised, the render 10-20% (the same
# effect as the jemalloc/tcmalloc preload Intel recommends for PyTorch on CPUs).
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 << 20  # keep up to this much freed memory for the next batch
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed activation memory instead of returning it to the system
    (process-wide, once; CPU inference and training call it). True where it took effect; a
    no-op off glibc (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
