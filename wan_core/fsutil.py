"""Outputs that never destroy what the user did not ask us to replace, and never appear half-written.

Every command that writes a folder goes through `atomic_output_dir`: the target is checked before any
work starts (a file where a folder is expected, or a non-empty folder that is not a previous output of
the same command, is refused; a previous output of ours is replaced only with overwrite), the command
writes into a temporary sibling, and the finished folder is renamed into place. A marker file names the
command that wrote a folder. Files are written with the user's umask."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from wan_core.errors import UserError

MARKER = ".wan22-output.json"


def output_owner(folder: Path) -> str | None:
    """The command that wrote `folder` (from its marker), or None."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_dir(target: Path, command: str | None, overwrite: bool = False) -> None:
    """Refuse, before any work, to write `command`'s output folder at `target` when that would destroy
    something: a file, or a non-empty folder that is not an earlier output of `command` (which itself is
    replaced only with overwrite). `command` None (a folder written inside another output) takes only a
    new or empty folder."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{target} exists and is not a folder; give a new path for the output")
    if not target.is_dir() or not any(target.iterdir()):
        return
    refuse_to_replace(str(target), output_owner(target), command, overwrite)


def refuse_to_replace(target: str, owner: str | None, command: str | None, overwrite: bool) -> None:
    """The rule for a non-empty output folder (local or remote) whose marker names `owner`."""
    if command is None or owner != command:
        what = f"an output of `wan22 {owner}`" if owner else "not an output of wan22"
        raise UserError(f"{target} is a folder with files in it ({what}); {command or 'this command'} writes only "
                        "into a new or empty folder, or replaces its own earlier output with --overwrite")
    if not overwrite:
        raise UserError(f"{target} holds an earlier output of `wan22 {command}`; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_output_dir(target: Path, command: str | None, overwrite: bool = False):
    """Yield a temporary folder beside `target`; on success it replaces `target` (see check_output_dir),
    on any error or interrupt it is removed and `target` is left as it was."""
    target = Path(target)
    check_output_dir(target, command, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        (tmp / WRITER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    except OSError as exc:
        raise UserError(f"cannot write {target}: cannot create a folder in {target.parent} ({os_reason(exc)})") \
            from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        (tmp / WRITER).unlink(missing_ok=True)
        if command is not None:
            write_marker(tmp, command)
        apply_umask(tmp)
        check_output_dir(target, command, overwrite)  # still true after the work (nothing appeared meanwhile)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        (old / WRITER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        os.rename(target, old / "x")
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


WRITER = ".wan22-writer.json"  # in a temporary output folder while it is written: which process writes it
STALE_AFTER_S = 24 * 3600  # a temporary folder of another host untouched this long is left over, not in use


def _writer_gone(tmp: Path) -> bool:
    """A temporary sibling whose writer is no longer running: a process of this host that has exited, or (another
    host's, or one without a writer file) a folder nobody has touched for STALE_AFTER_S."""
    import time

    try:
        writer = json.loads((tmp / WRITER).read_text())
        if writer.get("host") == socket.gethostname():
            try:
                os.kill(int(writer["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError, KeyError, TypeError):
                return False
            return False
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return time.time() - tmp.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_siblings(target: Path) -> None:
    """Remove the temporary folders an earlier, killed run left beside `target` (.NAME.tmp-*, .NAME.old-*): an
    interrupt removes its own, but SIGKILL or a lost node leaves them."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        if tmp.is_dir() and _writer_gone(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in target.parent.glob(f".{target.name}.old-*"):  # only ever left between two renames
        if old.is_dir() and _writer_gone(old):
            shutil.rmtree(old, ignore_errors=True)


def apply_umask(folder: Path) -> None:
    """Give everything under `folder` the modes the user's umask asks for (libraries we call write some
    files 0600 through their own temporary files)."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def write_marker(folder: Path, command: str) -> None:
    (folder / MARKER).write_text(json.dumps({"command": command}) + "\n")
    os.chmod(folder / MARKER, 0o666 & ~_umask())


def os_reason(exc: OSError) -> str:
    """An OSError as words, without errno numbers."""
    import errno

    reasons = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only file system",
               errno.ENOSPC: "no space left on the device", errno.ENOTDIR: "a part of the path is a file",
               errno.EEXIST: "it exists", errno.ENOENT: "no such file or folder", errno.EISDIR: "it is a folder",
               errno.EXDEV: "it is on another file system"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_file(target: Path, mode: str = "w"):
    """Yield a file object for a temporary file beside `target`, renamed onto it on success."""
    target = Path(target)
    if target.is_dir():
        raise UserError(f"{target} is a folder; give a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    except OSError as exc:
        raise UserError(f"cannot write {target}: cannot create a file in {target.parent} ({os_reason(exc)})") \
            from None
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
