"""Live mode: a camera (or a video played as one) drives a person in real time.

:class:`LiveSession` turns camera frames into marked, labelled output frames;
:mod:`talkinghead.live.capture` reads cameras and files without queueing;
:mod:`talkinghead.live.app` is ``talkinghead live`` (preview window, virtual camera, recording).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from talkinghead.live.session import LiveFrame, LiveSession

__all__ = ["LiveFrame", "LiveSession"]


def __getattr__(name: str):
    # Imported on first use: the capture side (and the CLI's camera check) starts without torch.
    if name in __all__:
        from talkinghead.live import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
