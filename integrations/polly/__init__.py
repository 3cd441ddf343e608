"""Amazon Polly (see :mod:`integrations.polly.provider`)."""

from integrations.polly.provider import POLLY_STATUSES, PollyProvider, PollySettings

__all__ = ["POLLY_STATUSES", "PollyProvider", "PollySettings"]
