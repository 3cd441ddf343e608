"""OpenAI-compatible speech servers (see :mod:`integrations.openai.provider`)."""

from integrations.openai.provider import OpenAIProvider, OpenAISettings, openai_error

__all__ = ["OpenAIProvider", "OpenAISettings", "openai_error"]
