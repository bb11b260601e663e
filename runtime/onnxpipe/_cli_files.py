"""Files the CLI writes besides stdout (``bench --json-out``): checked before the work, written whole or not.

Batch output (Parquet, any pyarrow filesystem) has its own checks in _batch_job; this is the plain local file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputFileError

FORCE_HINT = "pass --force to replace it"


def check_new_file(path: str, flag: str, force: bool) -> None:
    """Refuse, before any work, a ``path`` that is a folder, or an existing file without ``force``."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputFileError(f"{flag} {path} is a folder; name a file in it, e.g. {p / 'report.json'}")
    if os.path.lexists(p) and not force:
        raise OutputFileError(f"{path} already exists; {FORCE_HINT}")


def write_whole(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it there: never half a file."""
    p = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        os.unlink(tmp)
        raise
