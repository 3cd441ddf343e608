"""Outside systems, one sub-package each: TTS providers, and later Discord and Home Assistant.

``PROVIDERS`` is the registry of built-in providers: name → ``"module:Class"``. Adding a
provider is a module here plus one line below; the module is imported only when first used.
Third-party packages register theirs under the ``oyez.providers`` entry-point group instead.
"""

__all__ = ["PROVIDERS"]

PROVIDERS: dict[str, str] = {
    "piper": "integrations.piper:PiperProvider",
    "segmind": "integrations.segmind:SegmindProvider",
    "together": "integrations.together:TogetherProvider",
    "openai": "integrations.openai:OpenAIProvider",
}
