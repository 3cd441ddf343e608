"""``python -m bot``: the same as the ``oyez`` command."""

from bot.cli import main

raise SystemExit(main())
