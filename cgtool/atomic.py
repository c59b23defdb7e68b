"""Writing a file atomically, for every output cgtool writes (weights, tensors, pictures, pages, code).

The data goes to a temporary file beside the target, is flushed to disk, and is renamed over
the target: a reader never sees half a file, two runs writing the same path leave one whole
file, and a failed write leaves what was there. A run killed outright (SIGKILL, power loss)
cannot clean up after itself, so each temporary file carries its writer's process id
(``.weights.pt.4242.k3j9.tmp``) and the next write to that path removes those whose writer is
gone — never one that a live process is still writing.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile

from .errors import CgError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def sweep_stale(path: str) -> list[str]:
    """Remove the temporary files that killed writers of *path* left behind; return their names."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    pattern = re.compile(r"^\." + re.escape(os.path.basename(path)) + r"\.(\d+)\.[^.]+\.tmp$")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_file(path: str, place: str | None = None):
    """``with atomic_file(path) as f: f.write(...)``: *f* is a binary file that becomes *path* when the block
    ends without an error. Mistakes (no such folder, a folder in the way, no permission, a full disk) are
    CgErrors at *place* (default: the path)."""
    place = place or path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CgError(f"no such folder: {directory}", place, hint="create the folder first")
    if os.path.isdir(path):
        raise CgError(f"{path} is a folder", place, hint="give a file name")
    sweep_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise CgError(f"cannot write in {directory}: {e.strerror}", place,
                      hint="pick a folder you can write to" if e.errno in (errno.EACCES, errno.EROFS) else None) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an output is an ordinary file
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CgError(f"cannot write {path}: {e.strerror or e}", place) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
