"""Local paths and fsspec URLs behind one small interface, `Location` (its `fs` and `path` are there for
the few callers that need a filesystem call of their own: mirroring a training folder, the pointer file).

Reads stream through file objects; outputs are written to a local temporary folder and then moved
into place (renamed locally, uploaded and moved on object stores), so a failure leaves no target.
"""
from __future__ import annotations

import contextlib
import json
import posixpath
import shutil
import tempfile
from pathlib import Path

import fsspec

from wan_core.errors import UserError
from wan_core.fsutil import MARKER, atomic_output_dir, refuse_to_replace, write_marker


def is_url(path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


class Location:
    """A file or folder on any fsspec filesystem (local paths included)."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)

    def __truediv__(self, name: str) -> "Location":
        return Location(self.url.rstrip("/") + "/" + name)

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def size(self) -> int:
        return int(self.fs.size(self.path))

    def read_text(self) -> str:
        with self.fs.open(self.path, "rb") as f:
            return f.read().decode("utf-8")

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def write_text(self, text: str) -> None:
        """The whole file at once (an object store replaces the object whole; a local file through a rename)."""
        local = self.local_path()
        if local is not None:
            from wan_core.fsutil import atomic_output_file

            local.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output_file(local) as f:
                f.write(text)
            return
        self.fs.pipe_file(self.path, text.encode("utf-8"))

    def remove(self) -> None:
        """The file or folder and all below it; nothing when absent."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def glob(self, pattern: str) -> list["Location"]:
        root = self.url.rstrip("/")
        names = sorted(posixpath.basename(p) for p in self.fs.glob(posixpath.join(self.path, pattern)))
        return [Location(root + "/" + n) for n in names]

    def local_path(self) -> Path | None:
        return None if is_url(self.url) else Path(self.path)


@contextlib.contextmanager
def output_dir(target: str | Path, command: str | None, overwrite: bool = False):
    """Yield a local temporary folder; on success it becomes `target` (a local path or an fsspec URL).
    The target is checked first, as fsutil.check_output_dir describes, also when it is remote."""
    if not is_url(target):
        with atomic_output_dir(Path(str(target).removeprefix("file://")), command, overwrite) as tmp:
            yield tmp
        return
    loc = Location(target)
    _check_remote_output(loc, command, overwrite)
    staging = Path(tempfile.mkdtemp(prefix="wan22-out-"))
    try:
        yield staging
        # an object store has no rename: the old output goes, the new one is uploaded, its marker last (a folder
        # without the marker is an upload that did not finish, and is never taken for this command's output)
        marker = staging / MARKER
        marker.unlink(missing_ok=True)
        loc.remove()
        root = loc.path.rstrip("/")
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            loc.fs.put_file(str(path), f"{root}/{path.relative_to(staging).as_posix()}")
        if command is not None:
            write_marker(staging, command)
            loc.fs.put_file(str(marker), f"{root}/{MARKER}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def local_copy(source: str | Path):
    """A local folder holding `source`: the path itself when local, else a temporary download of the fsspec URL
    (removed afterwards), for the libraries that read only local files (diffusers' from_pretrained)."""
    if not is_url(source):
        yield Path(str(source).removeprefix("file://"))
        return
    loc = Location(source)
    if not loc.exists():
        raise UserError(f"{source}: no such file or folder")
    staging = Path(tempfile.mkdtemp(prefix="wan22-in-"))
    try:
        loc.fs.get(loc.path.rstrip("/") + "/", str(staging) + "/", recursive=True)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_remote_output(loc: "Location", command: str | None, overwrite: bool) -> None:
    if not loc.fs.exists(loc.path):
        return
    if not loc.fs.isdir(loc.path):
        raise UserError(f"{loc.url} exists and is not a folder; give a new path for the output")
    if not loc.fs.ls(loc.path):
        return
    try:
        owner = json.loads(loc.fs.cat_file(posixpath.join(loc.path, MARKER))).get("command")
    except (OSError, ValueError, AttributeError):
        owner = None
    refuse_to_replace(loc.url, owner, command, overwrite)
