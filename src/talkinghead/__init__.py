"""talkinghead: few-shot neural talking heads (Zakharov et al., ICCV 2019) and beyond.

    from talkinghead import TalkingHead
    head = TalkingHead.from_pretrained()

``TalkingHead`` is imported on first use, so ``import talkinghead`` (and the CLI, which starts
with it) stays light: no torch until a network is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["TalkingHead", "__version__"]

if TYPE_CHECKING:
    from talkinghead.inference.pipeline import TalkingHead


def __getattr__(name: str):
    if name == "TalkingHead":
        from talkinghead.inference.pipeline import TalkingHead

        return TalkingHead
    raise AttributeError(f"module 'talkinghead' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "TalkingHead"])
