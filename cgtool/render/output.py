"""Writing an output file atomically: a temporary file in the same folder, then os.replace.

A reader (a browser, an image viewer, a build step) never sees half a file, and a failed
write leaves what was there before."""
from __future__ import annotations

import os
import tempfile

from ..errors import CgError


def write_atomically(path: str, data: bytes | str, place: str = "--output") -> str:
    """Write *data* to *path* (text as UTF-8); return the path. Mistakes are CgErrors at *place*."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CgError(f"no such folder: {directory}", place, hint="create the folder first")
    if os.path.isdir(path):
        raise CgError(f"{path} is a folder", place, hint="give a file name")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cgtool-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise CgError(f"cannot write in {directory}: {e.strerror}", place) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CgError(f"cannot write {path}: {e.strerror}", place) from None
    return path
