"""talkinghead: few-shot neural talking heads (Zakharov et al., ICCV 2019) and beyond."""

__version__ = "0.1.0"
