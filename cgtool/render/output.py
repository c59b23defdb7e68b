"""Writing an output file atomically: a temporary file in the same folder, then os.replace.

A reader (a browser, an image viewer, a build step) never sees half a file, and a failed
write leaves what was there before."""
from __future__ import annotations

from ..atomic import atomic_file


def write_atomically(path: str, data: bytes | str, place: str = "--output") -> str:
    """Write *data* to *path* (text as UTF-8); return the path. Mistakes are CgErrors at *place*."""
    with atomic_file(path, place) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
