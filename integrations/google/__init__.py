"""Google Cloud Text-to-Speech (see :mod:`integrations.google.provider`)."""

from integrations.google.provider import GOOGLE_STATUSES, GoogleProvider, GoogleSettings

__all__ = ["GOOGLE_STATUSES", "GoogleProvider", "GoogleSettings"]
