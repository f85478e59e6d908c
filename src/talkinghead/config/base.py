"""Strict loading of typed, frozen dataclass configs from YAML or dicts.

Every component owns one frozen dataclass whose defaults are the paper's values. Presets are
YAML files parsed strictly: an unknown key, a missing nested section or a value of the wrong
type is an error that names the file and the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from talkinghead.errors import UserError

T = TypeVar("T")
PRESET_DIR = Path(__file__).parent / "presets"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, recursing into dataclasses and tuples."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except UserError:
                continue
        raise UserError(f"{where}: {value!r} does not match {annotation}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise UserError(f"{where}: {value!r} is not one of {typing.get_args(annotation)}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            raise UserError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors naming ``where``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a config (tuples become lists), suitable for YAML/JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Load ``cls`` from a YAML file; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, data, where=str(path))


def load_preset(cls: type[T], name_or_path: str | Path) -> T:
    """Load a bundled preset by name (``presets/<name>.yaml``) or any YAML file by path."""
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return load_yaml(cls, candidate)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_yaml(cls, path)
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise UserError(f"unknown preset {name_or_path!r} (bundled: {', '.join(available)})")


def save_yaml(config: Any, path: str | Path) -> None:
    """Write a config as YAML (atomically), so every run records what it resolved."""
    from talkinghead.fileio import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))
