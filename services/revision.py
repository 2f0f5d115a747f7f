"""The serve code's revision: a content hash of the `services` package as this process sees it.

A replica computes it from the files it imported, so the header it returns proves which code
answered. The dev loop computes the same hash from the source tree to know what to wait for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parent


def code_revision(directory: Path = SERVICES_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
