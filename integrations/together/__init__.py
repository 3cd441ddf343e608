"""Together AI's TTS models (see :mod:`integrations.together.provider`)."""

from integrations.together.models import MODELS
from integrations.together.provider import TOGETHER_STATUSES, TogetherProvider, TogetherSettings

__all__ = ["MODELS", "TOGETHER_STATUSES", "TogetherProvider", "TogetherSettings"]
