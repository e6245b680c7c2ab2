"""The generated blocks benchmark scripts keep in docs/benchmarks.md.

Each script owns the text between its ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers;
everything else on the page is left as it is. The page is re-read just before writing, so
scripts that finish at different times keep each other's blocks.
"""

from __future__ import annotations

from pathlib import Path

from mergepipe.core.atomic import write_text


def replace_section(path: Path, begin: str, end: str, section: str, heading: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the old
    block, or append it under ``heading`` when the page has none yet."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{section}\n"
    write_text(path, text)
