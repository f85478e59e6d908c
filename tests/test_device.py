"""One --device and --precision for every command: resolution, one-line errors, auto by CPU."""

from __future__ import annotations

import platform
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from talkinghead import assets, cli, device
from talkinghead.errors import UserError

# Real inputs (installed sample media), so that only the device can be wrong.
PHOTO, CLIP = str(assets.astronaut_path()), str(assets.sample_clip_path())
NETWORK_COMMANDS = {
    "train": ["--data", "d", "--run", "r"],
    "finetune": ["--source", PHOTO, "--out", "p.safetensors"],
    "animate": ["--source", PHOTO, "--driver", CLIP, "--out", "o.mp4"],
    "eval": [],
    "demo": [],
    "web": [],
}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_cpu_and_auto_resolve_here():
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device(" CPU ") == torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device.resolve_device("auto") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_absent_cuda_is_a_one_line_user_error(name):
    with pytest.raises(UserError, match="CUDA is not available") as error:
        device.resolve_device(name)
    assert "\n" not in str(error.value) and "--device cpu" in str(error.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:", "tpu", ""])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(UserError, match="unknown device"):
        device.check_device_name(name)


def _native_bf16_here() -> bool:
    """Read independently of the module: /proc/cpuinfo flags and torch's kernel level."""
    path = Path("/proc/cpuinfo")
    flags = set(path.read_text().split()) if path.exists() else set()
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith("AVX512") and bool(flags & {"avx512_bf16", "amx_bf16"})


def test_precision_auto_on_this_cpu_is_bf16_only_with_native_bf16():
    expected = "bf16" if _native_bf16_here() else "fp32"
    assert device.resolve_precision("auto", torch.device("cpu")) == expected
    assert device.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_auto_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_precision("auto", torch.device("cpu")) == "bf16"


def test_training_auto_keeps_fp32_on_any_cpu(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_precision("auto", torch.device("cpu"), training=True) == "fp32"
    assert device.resolve_precision("bf16", torch.device("cpu"), training=True) == "bf16"


def test_bf16_on_a_cpu_without_it_runs_and_warns_once(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    device._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert device.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert [w.category for w in caught] == [device.SlowPrecisionWarning]
    assert "AVX-512 BF16 or AMX" in str(caught[0].message)


def test_fp16_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        device.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(UserError, match="unknown precision"):
        device.resolve_precision("fp8", torch.device("cpu"))


def test_every_network_command_has_device_and_precision_defaulting_to_auto():
    parser, _ = cli.build_parser()
    for command, args in NETWORK_COMMANDS.items():
        parsed = parser.parse_args([command, *args])
        assert (parsed.device, parsed.precision) == ("auto", "auto"), command


@pytest.mark.parametrize("command", NETWORK_COMMANDS)
def test_absent_device_stops_every_command_before_anything_loads(command, monkeypatch, capsys):
    """cuda:99 is absent on any machine; nothing may be read, built or served first."""

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the device was checked")

    monkeypatch.setattr("talkinghead.inference.pipeline.read_info", loaded)
    monkeypatch.setattr("talkinghead.training.loop.train", loaded)
    monkeypatch.setattr("talkinghead.web.app.serve", loaded)
    assert cli.main([command, *NETWORK_COMMANDS[command], "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"talkinghead {command}: error: --device cuda:99" in err


@no_cuda
def test_cli_device_cuda_on_cpu_only_torch_is_exit_2_and_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "animate", "--source", PHOTO]
        + ["--driver", CLIP, "--out", str(tmp_path / "o.mp4"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=600,  # torch's import alone, on a busy 2-core machine
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("talkinghead animate: error: --device cuda: CUDA is not available")
    assert line.endswith("use --device cpu or auto")


def test_cli_bad_device_name_is_an_argument_error_without_torch_work(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["demo", "--device", "gpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown device 'gpu'" in err


_MALLOC_PROBE = """
import ctypes
from talkinghead.device import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks".split()]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2

def mapped(size):  # bytes of a fresh block of this size that came from its own mmap
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    grown = libc.mallinfo2().hblkhd - before
    libc.free(ctypes.c_void_p(block))
    return grown

print(mapped(16 << 20), keep_freed_memory(), keep_freed_memory(), mapped(16 << 20))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_activation_memory_is_kept_for_the_next_batch():
    # A 16 MB block (one 128 px activation of a batch of 8) came from a fresh mmap, which
    # page-faults on first touch and is unmapped when freed; after the call it comes from the
    # heap. A fresh process, so that nothing earlier has moved glibc's dynamic threshold.
    run = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    before, took, again, after = run.stdout.split()
    assert int(before) >= 16 << 20 and took == again == "True" and int(after) == 0
