"""What the commands write, and where: output folders and files that never destroy a user's data.

Every command that writes a folder (`generate --out`, `simulate --build-dir`, `build`'s
``DIR/build``) goes through :func:`check_output_folder` before it starts its work and writes
through :func:`staged_folder`:

- a new path is created; an existing folder is replaced only when it is one the command wrote
  itself (its ``owner`` test says so) or with ``force``; the current folder, a folder holding
  it, ``/`` and the home folder are never replaced;
- a symbolic link is refused, never followed into its target;
- the work is done in a staging folder beside the target, named after the process that writes
  it (``.NAME.PID.instabnn-tmp``), which replaces the target in one atomic exchange only when
  complete, so a failure or a kill never corrupts the previous output; the next run next to it
  removes the staging folders of processes that are gone.

Files (`train --out`, `--json`) are written the same way by :func:`atomic_write`, and
:func:`inside` confines every path that a design folder names to that folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

__all__ = [
    "UnsafePathError",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "inside",
    "remove_stale_staging",
    "staged_folder",
]

STAGING_SUFFIX = ".instabnn-tmp"
_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)(?:-\d+)?" + re.escape(STAGING_SUFFIX))


class UnsafePathError(UserError, ValueError):
    """An output or input path the command must not use; the message is one line saying why."""


def _absolute(path) -> Path:
    """``path`` made absolute without following a final symbolic link (``..`` resolved lexically)."""
    return Path(os.path.abspath(os.fspath(path)))


def _protected(absolute: Path) -> str | None:
    cwd = Path.cwd()
    if absolute == Path(absolute.anchor):
        return "the root folder"
    if absolute == Path.home():
        return "your home folder"
    if absolute == cwd:
        return "the current folder"
    if absolute in cwd.parents:
        return "a folder that holds the current folder"
    return None


def _first_existing(absolute: Path) -> Path:
    ancestor = absolute.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    return ancestor


def _probe(folder: Path, label: str) -> None:
    """Creates and removes a file in ``folder``: permissions alone do not tell (root, read-only mounts, /proc)."""
    # the thread too: threads of one process (bench/hardware.py --jobs 2) probe the same folder at once
    probe = folder / f".probe.{os.getpid()}-{threading.get_native_id()}{STAGING_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UnsafePathError(f"{label}: cannot write in {folder} ({exc.strerror or exc})") from None


def _check_parent(absolute: Path, label: str) -> None:
    ancestor = _first_existing(absolute)
    if not ancestor.is_dir():
        raise UnsafePathError(f"{label}: {ancestor} is a file, not a folder")
    _probe(ancestor, label)


def check_output_folder(
    path,
    *,
    label: str,
    owner: Callable[[Path], str | None],
    force: bool = False,
) -> Path:
    """Checks that ``path`` may be written as an output folder; returns it absolute.

    Parameters
    ----------
    path : path-like
        The folder the command will write (created, or replaced when complete).
    label : str
        How the message names the path, e.g. ``"--out build/x"``.
    owner : callable
        ``owner(folder)`` for an existing folder: ``None`` when the command wrote it and may
        replace it, otherwise the reason it may not (one phrase, e.g. ``"it holds no manifest.json"``).
    force : bool
        Replace an existing folder that ``owner`` does not recognise (never a protected one).

    Raises
    ------
    UnsafePathError
        An empty path, a protected folder, a symbolic link, a file, a folder the command did not
        write (without ``force``), or a place that cannot be written.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise UnsafePathError(f"{label}: give a folder name (an empty path would mean the current folder)")
    absolute = _absolute(path)
    protected = _protected(absolute)
    if protected is not None:
        raise UnsafePathError(f"{label} is {protected}; give a new folder for the output")
    if absolute.is_symlink():
        raise UnsafePathError(f"{label} is a symbolic link; give a real folder (links are never followed)")
    _check_parent(absolute, label)
    if absolute.exists():
        if not absolute.is_dir():
            raise UnsafePathError(f"{label} is a file; give a folder to write into")
        reason = owner(absolute)
        if reason is not None and not force:
            raise UnsafePathError(f"{label} exists and {reason}; give a new folder, or --force to replace it")
    return absolute


def check_output_file(path, *, label: str) -> Path:
    """Checks that ``path`` may be written as an output file (replaced when complete); returns it absolute.

    Raises
    ------
    UnsafePathError
        An empty path, a folder, a missing parent folder or one that cannot be written.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise UnsafePathError(f"{label}: give a file name")
    absolute = _absolute(path)
    if absolute.is_dir():
        raise UnsafePathError(f"{label} is a folder; give the name of a file to write")
    parent = absolute.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise UnsafePathError(f"{label}: the folder {parent} {what}")
    _probe(parent, label)
    return absolute


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(folder: Path) -> None:
    """Removes the staging folders and files in ``folder`` whose writing process is gone (killed mid-run)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        match = _STAGING.fullmatch(entry.name)
        if match is None or entry.is_symlink() or _alive(int(match["pid"])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _staging_path(target: Path) -> Path:
    for attempt in range(1000):
        suffix = f"-{attempt}" if attempt else ""
        candidate = target.with_name(f".{target.name}.{os.getpid()}{suffix}{STAGING_SUFFIX}")
        if not os.path.lexists(candidate):
            return candidate
    raise UnsafePathError(f"cannot find a free staging name next to {target}")


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux ``renameat2``); ``False`` where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _created_parents(absolute: Path) -> list[Path]:
    missing = []
    parent = absolute.parent
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    return missing


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yields a fresh staging folder beside ``target`` that replaces ``target`` when the block completes.

    ``target`` must have passed :func:`check_output_folder`. Missing parent folders are created
    (and removed again when the block fails); on any exception, interrupts included, the staging
    folder is removed and ``target`` is left as it was.
    """
    target = _absolute(target)
    created = _created_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    staging = _staging_path(target)
    try:
        staging.mkdir()
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        if os.path.lexists(target):
            if not _exchange(staging, target):
                # no atomic exchange here: the old folder steps aside for the instant of the rename
                aside = _staging_path(target)
                os.replace(target, aside)
                os.replace(staging, target)
                staging = aside
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def atomic_write(path, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a staging file beside it and an atomic rename.

    The staging file is removed when writing fails, interrupts included; a stale one left by a
    killed process is removed by the next write beside it.
    """
    path = _absolute(path)
    remove_stale_staging(path.parent)
    staging = _staging_path(path)
    try:
        with open(staging, "wb" if isinstance(data, bytes) else "w") as stream:
            stream.write(data)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(folder: Path, name, *, what: str) -> Path:
    """The path ``name`` (relative, as a design folder's manifest lists it) within ``folder``.

    Raises
    ------
    UnsafePathError
        When ``name`` is absolute, not a string, or resolves (through ``..`` or a symbolic link)
        outside ``folder``.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafePathError(f"{what} names {name!r}, which is not a file name")
    if os.path.isabs(name):
        raise UnsafePathError(f"{what} names {name}, outside the design folder; regenerate the design")
    root = Path(folder).resolve()
    resolved = (root / name).resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"{what} names {name}, which lies outside the design folder; regenerate the design")
    return resolved
