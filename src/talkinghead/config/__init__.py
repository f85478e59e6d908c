"""Typed configs: the loader in :mod:`.base`, one dataclass module per component."""

from talkinghead.config.base import from_dict, load_preset, load_yaml, save_yaml, to_dict

__all__ = ["from_dict", "load_preset", "load_yaml", "save_yaml", "to_dict"]
