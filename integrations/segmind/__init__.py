"""Segmind's TTS models (see :mod:`integrations.segmind.provider`)."""

from integrations.segmind.models import MODELS
from integrations.segmind.provider import SEGMIND_STATUSES, SegmindProvider, SegmindSettings

__all__ = ["MODELS", "SEGMIND_STATUSES", "SegmindProvider", "SegmindSettings"]
