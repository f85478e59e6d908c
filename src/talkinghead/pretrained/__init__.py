"""Readers for pretrained weight files in their original formats (no conversion step needed)."""

from talkinghead.pretrained.dlib_format import DlibLayer, DlibMetricNet, read_metric_net

__all__ = ["DlibLayer", "DlibMetricNet", "read_metric_net"]
