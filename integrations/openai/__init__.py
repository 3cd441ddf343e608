"""OpenAI-compatible speech servers (see :mod:`integrations.openai.provider`)."""

from integrations.openai.provider import OPENAI_STATUSES, OpenAIProvider, OpenAISettings

__all__ = ["OPENAI_STATUSES", "OpenAIProvider", "OpenAISettings"]
