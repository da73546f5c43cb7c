"""Inode numbers for paths, with the kernel's lookup counts.

Paths are relative to the mount's root ('' is the root). A number is never reused for
another path while the kernel may still hold it: an entry is removed only when its lookup
count falls to zero and no file handle uses it.
"""

from rangefs.errors import NotFound

ROOT_INODE = 1


class InodeTable:
    def __init__(self) -> None:
        self._by_path: dict[str, int] = {"": ROOT_INODE}
        self._by_ino: dict[int, str] = {ROOT_INODE: ""}
        self._lookups: dict[int, int] = {}
        self._open: dict[int, int] = {}
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_ino)

    def ino_for(self, path: str) -> int:
        ino = self._by_path.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_ino[ino] = path
        return ino

    def path_of(self, ino: int) -> str:
        try:
            return self._by_ino[ino]
        except KeyError:
            raise NotFound(f"inode {ino} unknown") from None

    def looked_up(self, ino: int) -> None:
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def forget(self, ino: int, count: int) -> None:
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        self._maybe_drop(ino)

    def opened(self, ino: int) -> None:
        self._open[ino] = self._open.get(ino, 0) + 1

    def closed(self, ino: int) -> None:
        left = self._open.get(ino, 0) - 1
        if left > 0:
            self._open[ino] = left
            return
        self._open.pop(ino, None)
        self._maybe_drop(ino)

    def _maybe_drop(self, ino: int) -> None:
        if ino == ROOT_INODE or ino in self._lookups or ino in self._open:
            return
        path = self._by_ino.pop(ino, None)
        if path is not None and self._by_path.get(path) == ino:
            del self._by_path[path]
