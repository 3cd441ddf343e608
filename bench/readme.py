"""Writing a benchmark's table into README.md, between its ``<!-- bench:NAME:start/end -->``
markers."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_readme(name: str, text: str) -> None:
    """Replace what stands between the ``bench:NAME`` markers with ``text``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    content = README.read_text(encoding="utf-8")
    if start not in content or end not in content:
        raise SystemExit(f"README.md has no {start} … {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")
