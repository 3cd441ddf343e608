"""Together AI's TTS models (see :mod:`integrations.together.provider`)."""

from integrations.together.models import MODELS
from integrations.together.provider import TogetherProvider, TogetherSettings, together_error

__all__ = ["MODELS", "TogetherProvider", "TogetherSettings", "together_error"]
