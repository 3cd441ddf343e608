"""``python -m bot``: the same as the ``oyez`` command."""

from bot.cli import run

run()
