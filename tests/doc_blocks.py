"""The shell blocks of the docs that tests run as printed (README.md, docs/operations.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh_block(path: Path, first_line: str) -> str:
    """The ```sh block of `path` whose first line starts with `first_line`; there must be one."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if block.startswith(first_line)]
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    assert len(found) == 1, f"{name} has {len(found)} sh block(s) starting {first_line!r}"
    return found[0]
