"""readdir as the core hands it out (:data:`rangefs.fs.filesystem.Listed`, plain tuples),
seen by field name in the tests."""

from __future__ import annotations

import stat
from typing import NamedTuple

from rangefs.fs.filesystem import Filesystem


class DirItem(NamedTuple):
    name: str
    next_id: int
    ino: int
    mode: int
    nlink: int
    size: int
    blocks: int
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


async def read_dir(fs: Filesystem, fh: int, start_id: int) -> list[DirItem]:
    """Every item after ``start_id``, each taken as the kernel takes what fits its buffer."""
    return [DirItem(*item) for item in await fs.readdir(fh, start_id)]
