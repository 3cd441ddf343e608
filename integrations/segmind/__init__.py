"""Segmind's TTS models (see :mod:`integrations.segmind.provider`)."""

from integrations.segmind.models import MODELS
from integrations.segmind.provider import SegmindProvider, SegmindSettings, segmind_error

__all__ = ["MODELS", "SegmindProvider", "SegmindSettings", "segmind_error"]
