"""Lock files: a non-blocking exclusive `flock`, held while the descriptor stays open."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_flock(path: Path, *, follow_symlinks: bool = True) -> int | None:
    """Open `path` (created with mode 0600) and lock it without waiting.

    Returns the descriptor (closing it lets go), or None when another process holds
    the lock. Errors opening the file propagate as `OSError`.
    """
    flags = os.O_RDWR | os.O_CREAT | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
