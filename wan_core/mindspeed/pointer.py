"""Megatron's pointer file, as MindSpeed-MM reads and writes it: FOLDER/latest_checkpointed_iteration.txt names
`release` or the latest iteration number, and is written last (atomically), so a reader sees the old checkpoint
or the new one. It is written without a newline, as Megatron writes it: MindSpeed-MM's `load_from_mm` compares
the file's first line to "release" without stripping it. Readers accept either."""
from __future__ import annotations

import re
from pathlib import Path

from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_file

POINTER_FILE = "latest_checkpointed_iteration.txt"
RELEASE = "release"


def pointer_text(value: int | str) -> str:
    return str(value)


def parse_pointer(text: str, where) -> int | str:
    """RELEASE or an iteration number, from the pointer file's first line."""
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first == RELEASE:
        return RELEASE
    if not re.fullmatch(r"\d+", first):
        raise UserError(f"{where}: expected 'release' or an iteration number, found {first!r}")
    return int(first)


def read_pointer(folder) -> int | str | None:
    """What `folder`'s pointer file names, or None when there is none."""
    pointer = folder / POINTER_FILE
    if not pointer.is_file():
        return None
    return parse_pointer(pointer.read_text(), pointer)


def write_pointer(folder, value: int | str) -> None:
    """Replace the pointer atomically: a reader sees the old value or the new one, never a partial file.
    `folder` is a local path or a wan_core.storage.Location (an object store replaces an object whole)."""
    local = folder.local_path() if hasattr(folder, "local_path") else Path(folder)
    if local is None:
        folder.fs.pipe_file(f"{folder.path.rstrip('/')}/{POINTER_FILE}", pointer_text(value).encode())
        return
    with atomic_output_file(local / POINTER_FILE) as f:
        f.write(pointer_text(value))
