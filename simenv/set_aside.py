"""Damaged cache entries are set aside, never trusted and never deleted: renamed `<name>.corrupt-<timestamp>` with
one warning line, so the caller rebuilds the entry and the damaged copy stays for a look.

What the caches are and why they are trusted at all: every cache lives in one local directory the user owns
(`[data] cache_dir`, else `$SIMREC_CACHE_DIR`, else `~/.cache/simrec`), written only by simrec. Pickles (the fitted
response model) and torch files (`weights_only=True`) are loaded only from there; a cache directory shared with
people you do not trust is as unsafe as running their code. The checks catch damage (a crash, a full disk, a
truncated copy), not tampering.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def set_aside(path: str | Path, why: str) -> Path:
    """Rename `path` (a file or a directory) to `<name>.corrupt-<UTC timestamp>` and warn once; returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    log.warning("cache %s is damaged (%s): set aside as %s; it will be rebuilt", path, why, target.name)
    return target
