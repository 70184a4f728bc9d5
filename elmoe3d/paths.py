"""Where commands write: one place that prepares output folders and files, and says why not.

Every command that writes calls :func:`output_dir` (for ``-o DIR``) or :func:`output_file` (for
``--json FILE``) **before any work starts**. Each creates what is missing (nested folders
included, as ``--help`` promises), then proves the place writable by creating and removing a
probe file, so a folder that is read-only, immutable or on a read-only file system is refused up
front even for root (whom permission bits do not stop). A refusal is a :class:`UserError` with one
line that names the path and the cause:

- an empty name (``-o ''`` is not the current folder);
- a name or a component longer than the file system takes;
- the path, or one of its parents, being an existing file;
- a folder that cannot be created or written (the operating system's reason, ``EROFS``,
  ``EACCES``, ``EPERM``, ...).

An existing output file is opened without truncation and given an empty write, which refuses a
device that takes no data (``/dev/full``); a file system without a free block is refused too.
What can still fail only while writing (a disk that fills up during the run) becomes the same
kind of line through :func:`write_text` or :func:`os_error_message`, which the command line
applies to every ``OSError`` that reaches it.
"""

import errno
import os
import tempfile
from pathlib import Path

from .errors import UserError

# POSIX limits, used when the file system cannot be asked (the path does not exist yet).
_NAME_MAX, _PATH_MAX = 255, 4096


def _limit(existing, name, default):
    try:
        return os.pathconf(existing, name)
    except (OSError, ValueError):
        return default


def _nearest_existing(path):
    """The longest prefix of ``path`` that exists (``path`` itself when it does)."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_name(text, what):
    if not isinstance(text, (str, os.PathLike)) or str(text) == "":
        raise UserError(f"{what}: an empty path names nothing; give a folder or file name")
    path = Path(text)
    if "\0" in str(path):
        raise UserError(f"{what}: the path {str(path)!r} contains a NUL byte")
    existing = _nearest_existing(path.absolute())
    name_max = _limit(existing, "PC_NAME_MAX", _NAME_MAX)
    path_max = _limit(existing, "PC_PATH_MAX", _PATH_MAX)
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise UserError(f"cannot write {_short(path)}: the name {_short(part)} is "
                            f"{len(os.fsencode(part))} bytes, longer than the {name_max} this file system takes")
    if len(os.fsencode(str(path.absolute()))) >= path_max:
        raise UserError(f"cannot write {_short(path)}: the path is longer than the {path_max} bytes "
                        f"this system takes")
    return path


def _short(text, most=200):
    text = str(text)
    return text if len(text) <= most else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def _blocking_file(path):
    """An existing non-folder that ``path`` or one of its parents would have to be, or None."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def output_dir(text, what="-o/--out"):
    """Create the folder ``text`` (and its parents) if missing and check it is writable.

    Returns the folder as a :class:`~pathlib.Path`. Raises :class:`UserError` (one line naming
    the path and the cause) for an empty name, a name too long, a file in the way, or a folder
    that cannot be created or written.
    """
    path = _check_name(text, what)
    blocker = _blocking_file(path)
    if blocker is not None:
        cause = "it is a file" if blocker == path else f"{_short(blocker)} is a file, not a folder"
        if blocker == path and not blocker.is_file():
            cause = "it exists and is not a folder"
        raise UserError(f"cannot write into {_short(path)}: {cause}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(os_error_message(exc, path, "cannot create folder")) from None
    _probe(path, path)
    _check_space(path, path)
    return path


def output_file(text, what="--json"):
    """Check that the file ``text`` can be written; its folder is created if missing.

    An existing file is left untouched (opened for appending, nothing written); a new one is
    not created, but its folder is proven writable. Returns the :class:`~pathlib.Path`.
    """
    path = _check_name(text, what)
    if path.is_dir():
        raise UserError(f"cannot write {_short(path)}: it is a folder")
    parent = path.parent
    blocker = _blocking_file(parent)
    if blocker is not None:
        raise UserError(f"cannot write {_short(path)}: {_short(blocker)} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(os_error_message(exc, parent, "cannot create folder")) from None
    if os.path.lexists(path):
        # open without truncating and write nothing: refuses a read-only or immutable file, and
        # a device that takes no data (/dev/full says ENOSPC even to an empty write)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            try:
                os.write(fd, b"")
            finally:
                os.close(fd)
        except OSError as exc:
            raise UserError(os_error_message(exc, path)) from None
    else:
        _probe(parent, path)
        _check_space(parent, path)
    return path


def _check_space(folder, shown):
    """Refuse a folder on a file system with no block left (one that counts blocks at all)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    if st.f_blocks > 0 and st.f_bavail == 0:
        raise UserError(f"cannot write {_short(shown)}: {_CAUSES[errno.ENOSPC]}")


def _probe(folder, shown):
    """Create and remove a file in ``folder``: the only test of writability that root obeys."""
    try:
        fd, name = tempfile.mkstemp(prefix=".elmoe3d-probe-", dir=folder)
    except OSError as exc:
        raise UserError(os_error_message(exc, shown)) from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


# Causes in words for the errors a user's path or disk produces (the OS text as fallback).
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable or protected folder?)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it already exists",
    errno.EIO: "input/output error",
    errno.EPIPE: "broken pipe",
}


def os_error_message(exc, path=None, action="cannot write"):
    """One line for an ``OSError``: the action, the path and the cause in words.

    Without ``path`` the error's own file name is used; an error that names no file (a write
    to an open file) says only the cause.
    """
    filename = path if path is not None else exc.filename
    cause = _CAUSES.get(exc.errno) or (exc.strerror or str(exc)).lower()
    if path is None:
        action = {errno.ENOENT: "cannot open", errno.ENOTDIR: "cannot open"}.get(exc.errno, "cannot access"
                                                                               if filename else "cannot write")
    if filename is None:
        return f"{action}: {cause}"
    return f"{action} {_short(filename)}: {cause}"


def write_text(path, text):
    """Write ``text`` to ``path``; an ``OSError`` (a full disk, ...) becomes a one-line
    :class:`UserError` that names the file."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(os_error_message(exc, path)) from None
    return Path(path)
