"""Checkpoint I/O, the one place for it: weights as safetensors, training state via torch.save.

Weights files hold flat ``<module>.<state-dict key>`` tensors (e.g.
``generator.encoder.layers.0.conv1.parametrizations.weight.original``; spectral norm's
``...weight.0._u`` / ``_v`` vectors are kept so training resumes bit-exactly) and, in the
safetensors metadata, the resolved config as JSON. Loading is strict: every key a module
expects must be there with its shape, nothing extra may sit under a requested module's name,
and the stored model config must equal the expected one. Every failure is a one-line
:class:`~talkinghead.errors.UserError` naming the file.

Training state (optimiser moments, step counters, RNG states) is a dict of plain tensors and
numbers written with ``torch.save`` and read back with ``weights_only=True``: no pickled code.
A run folder keeps its last few as ``checkpoint-<step>.pt``, and ``checkpoint.pt`` names the
latest (:func:`save_run_checkpoint`, :func:`latest_run_checkpoint`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from talkinghead.config.base import from_dict, to_dict
from talkinghead.config.model import ModelConfig
from talkinghead.config.preset import Preset
from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path

FORMAT = "talkinghead-weights"
FORMAT_VERSION = "1"
LATEST_CHECKPOINT = "checkpoint.pt"  # in a run folder: the latest checkpoint (export reads it)
_NUMBERED_CHECKPOINT = re.compile(r"checkpoint-(\d+)\.pt")
_MAX_KEYS_SHOWN = 5  # keep key lists on one readable line


class WeightsInfo(NamedTuple):
    """What a weights file says about itself (its safetensors metadata)."""

    model_config: ModelConfig  # the networks' shapes the weights belong to
    config: dict[str, Any]  # the full resolved config as saved (a Preset or a ModelConfig)
    config_type: str  # "Preset" or "ModelConfig"
    dtype: str  # "float32" or "float16": how floating tensors are stored
    extra: dict[str, Any]  # the caller's extra_metadata


def save_weights(
    path: str | Path,
    modules: Mapping[str, nn.Module] | Mapping[str, Tensor],
    config: Preset | ModelConfig,
    extra_metadata: Mapping[str, Any] | None = None,
    *,
    half: bool = False,
) -> None:
    """Write weights and the resolved config to a safetensors file, atomically.

    ``modules`` maps names to modules (keys become ``<name>.<state-dict key>``) or is already a
    flat ``{key: tensor}`` state dict. ``half`` stores floating tensors as float16 (an export
    for inference: half the size; :func:`load_weights` casts back to the modules' dtype).
    ``extra_metadata`` must be JSON-serialisable (step, loss, git hash, ...).
    """
    tensors = _flatten(modules)
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_type": type(config).__name__,
        "config": json.dumps(to_dict(config), sort_keys=True),
        "dtype": "float16" if half else "float32",
        "extra": json.dumps(dict(extra_metadata or {}), sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _flatten(modules: Mapping[str, nn.Module] | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One flat dict of contiguous CPU tensors (safetensors refuses views and shared storage)."""
    flat: dict[str, Tensor] = {}
    for name, value in modules.items():
        if isinstance(value, nn.Module):
            for key, tensor in value.state_dict().items():
                flat[f"{name}.{key}"] = tensor
        elif isinstance(value, Tensor):
            flat[name] = value
        else:
            raise TypeError(f"{name}: expected an nn.Module or a Tensor, got {type(value)}")
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in flat.items()}


def read_info(path: str | Path) -> WeightsInfo:
    """The config and metadata of a weights file, without reading its tensors."""
    path = Path(path)
    with _open(path) as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a talkinghead weights file (no config in its metadata)")
    try:
        config = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"{path}: damaged metadata (config is not valid JSON)") from None
    config_type = metadata.get("config_type", "")
    if config_type not in ("Preset", "ModelConfig"):
        raise UserError(f"{path}: unknown config type {config_type!r} in its metadata")
    model_dict = config.get("model", {}) if config_type == "Preset" else config
    try:
        model_config = from_dict(ModelConfig, model_dict, where="model")
    except UserError as exc:
        raise UserError(f"{path}: its stored config does not load here: {exc}") from None
    return WeightsInfo(model_config, config, config_type, metadata.get("dtype", "float32"), extra)


def check_model_config(
    path: str | Path, stored: ModelConfig, expected: Preset | ModelConfig
) -> None:
    """Raise a one-line UserError naming the first model field that differs."""
    expected_model = expected.model if isinstance(expected, Preset) else expected
    difference = _first_difference(to_dict(stored), to_dict(expected_model), "model")
    if difference is not None:
        field, in_file, wanted = difference
        raise UserError(
            f"{path}: made for another model: {field} is {in_file} in the file, "
            f"{wanted} expected (wrong preset?)"
        )


def _first_difference(stored: Any, expected: Any, where: str) -> tuple[str, Any, Any] | None:
    if isinstance(stored, dict) and isinstance(expected, dict):
        # Dataclass field order, so the headline field (image_size) is reported first.
        for key in [*stored, *(k for k in expected if k not in stored)]:
            found = _first_difference(stored.get(key), expected.get(key), f"{where}.{key}")
            if found is not None:
                return found
        return None
    return None if stored == expected else (where, stored, expected)


def load_weights(
    path: str | Path,
    modules: Mapping[str, nn.Module],
    expected_config: Preset | ModelConfig | None = None,
) -> WeightsInfo:
    """Load the named modules' weights in place, strictly; return the file's info.

    Tensors under names not in ``modules`` are left alone (inference loads E and G from a
    training checkpoint that also holds D). Within a requested name, missing keys, unexpected
    keys and shape mismatches are errors. With ``expected_config``, the stored model config
    must match it first, so loading another preset's file says so instead of listing shapes.
    """
    path = Path(path)
    info = read_info(path)
    if expected_config is not None:
        check_model_config(path, info.model_config, expected_config)
    with _open(path) as handle:
        stored_keys = set(handle.keys())
        for name, module in modules.items():
            wanted = module.state_dict()
            prefix = f"{name}."
            present = {k[len(prefix) :] for k in stored_keys if k.startswith(prefix)}
            if not present:
                held = sorted({k.split(".", 1)[0] for k in stored_keys})
                raise UserError(f"{path}: no weights for {name!r} (the file holds: {held})")
            _check_keys(path, name, set(wanted), present)
            state = {}
            for key, target in wanted.items():
                tensor = handle.get_tensor(prefix + key)
                if tensor.shape != target.shape:
                    raise UserError(
                        f"{path}: {prefix + key} has shape {list(tensor.shape)} in the file, "
                        f"{list(target.shape)} expected (wrong preset?)"
                    )
                state[key] = tensor.to(dtype=target.dtype)
            module.load_state_dict(state, strict=True)
    return info


def _check_keys(path: Path, name: str, wanted: set[str], present: set[str]) -> None:
    missing, unexpected = sorted(wanted - present), sorted(present - wanted)
    problems = []
    if missing:
        problems.append(f"missing keys {_short_list(name, missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short_list(name, unexpected)}")
    if problems:
        raise UserError(f"{path}: {name!r} does not match the file: {'; '.join(problems)}")


def _short_list(name: str, keys: list[str]) -> str:
    shown = ", ".join(f"{name}.{k}" for k in keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def read_state_dict(path: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """All tensors of a weights file as a flat dict, floating ones cast to ``dtype``."""
    path = Path(path)
    read_info(path)  # rejects files that are not ours, with a clear message
    with _open(path) as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _open(path: Path):
    """``safe_open`` with failures turned into one-line UserErrors naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable safetensors file ({reason})") from None


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write optimiser states, counters and RNG states (plain tensors/numbers/dicts) atomically."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read what :func:`save_training_state` wrote; ``weights_only=True`` runs no pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such training-state file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or unsafe files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot load training state ({reason})") from None


def save_run_checkpoint(run_dir: str | Path, state: Mapping[str, Any], keep: int = 2) -> Path:
    """Write ``run_dir/checkpoint-<step>.pt`` atomically, point ``checkpoint.pt`` at it, and
    delete all but the newest ``keep`` numbered checkpoints; returns the file written.

    Each step is a complete file before any name refers to it, so a kill at any moment leaves
    ``checkpoint.pt`` on a whole checkpoint (the new one or the one before).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    run_dir = Path(run_dir)
    path = run_dir / f"checkpoint-{int(state['step']):09d}.pt"
    save_training_state(path, state)
    _point_at(run_dir / LATEST_CHECKPOINT, path)
    for old in run_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The numbered checkpoints of a run folder, oldest first."""
    found = []
    for path in Path(run_dir).glob("checkpoint-*.pt"):
        match = _NUMBERED_CHECKPOINT.fullmatch(path.name)
        if match:
            found.append((int(match[1]), path))
    return [path for _, path in sorted(found)]


def latest_run_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoint.pt`` when it leads to a file, else the newest numbered one, else None."""
    latest = Path(run_dir) / LATEST_CHECKPOINT
    if latest.is_file():
        return latest
    numbered = run_checkpoints(run_dir)
    return numbered[-1] if numbered else None


def _point_at(link: Path, target: Path) -> None:
    """Make ``link`` name ``target`` in one rename: a relative symlink, or where the filesystem
    has none, a hard link, else a copy."""
    with atomic_path(link) as tmp:
        tmp.unlink()
        try:
            os.symlink(target.name, tmp)
        except OSError:
            try:
                os.link(target, tmp)
            except OSError:
                shutil.copyfile(target, tmp)
