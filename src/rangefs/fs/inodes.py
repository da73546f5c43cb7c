"""Inode numbers for paths, with the kernel's lookup counts.

Paths are relative to the mount's root ('' is the root). A number is never reused for
another path while the kernel may still hold it: an entry is removed only when its lookup
count falls to zero and no file handle uses it; its number may then be given to another path
(the kernel forgot it, so nothing can confuse the two).

Memory: readdirplus gives the kernel an inode for every name listed, so a directory of a
million keys means a million live entries here. They are kept compact: the path by number in
a list, the lookup count in an array of machine words, and one dict from path to number
(about 100 bytes an entry, most of it the path string itself).
"""

from array import array

from rangefs.errors import NotFound

ROOT_INODE = 1


class InodeTable:
    def __init__(self) -> None:
        self._paths: list[str | None] = [None, ""]  # by inode number; None: free
        self._by_path: dict[str, int] = {"": ROOT_INODE}
        self._lookups = array("Q", [0, 0])  # by inode number
        self._open: dict[int, int] = {}  # few: open files only
        self._free = array("Q")  # numbers forgotten by the kernel, to give out again

    def __len__(self) -> int:
        return len(self._by_path)

    def ino_for(self, path: str) -> int:
        ino = self._by_path.get(path)
        if ino is None:
            if self._free:
                ino = self._free.pop()
                self._paths[ino] = path
            else:
                ino = len(self._paths)
                self._paths.append(path)
                self._lookups.append(0)
            self._by_path[path] = ino
        return ino

    def path_of(self, ino: int) -> str:
        path = self._paths[ino] if 0 < ino < len(self._paths) else None
        if path is None:
            raise NotFound(f"inode {ino} unknown")
        return path

    def take(self, path: str) -> int:
        """The number of ``path`` (made if new) with one more kernel reference: a lookup, or
        a name readdirplus hands out. One call per name listed, so it does both at once."""
        ino = self._by_path.get(path)
        if ino is None and not self._free:  # a new number at the end: the common case
            ino = self._by_path[path] = len(self._paths)
            self._paths.append(path)
            self._lookups.append(1)
            return ino
        if ino is None:
            ino = self.ino_for(path)
        self._lookups[ino] += 1
        return ino

    def forget(self, ino: int, count: int) -> None:
        if not 0 < ino < len(self._paths):
            return
        self._lookups[ino] = max(self._lookups[ino] - count, 0)
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
        if ino == ROOT_INODE or self._lookups[ino] or ino in self._open:
            return
        path = self._paths[ino]
        if path is None:
            return
        self._paths[ino] = None
        if self._by_path.get(path) == ino:
            del self._by_path[path]
        self._free.append(ino)
