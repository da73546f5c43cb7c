"""readdir without FUSE: ``.`` and ``..`` first, stable paging, and lookup counts that
balance the way the kernel forgets (it takes no reference for ``.`` and ``..``)."""

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from rangefs import options
from rangefs.cache.metadata_index import AsyncMetadataIndex, MetadataIndex, Scope
from rangefs.fs.filesystem import Filesystem
from rangefs.fs.namespace import Namespace
from rangefs.remote.store import Listing, ObjectInfo
from rangefs.stats import Stats
from tests.support.readdir import read_dir

KEYS = ["a.txt", "sub/b.txt", "sub/c.txt", "sub/deep/d.txt", "z.txt"]


class FakeStore:
    bucket = "bucket"

    async def list_dir_pages(
        self, prefix: str, on_page: Callable[[Listing], Awaitable[None]]
    ) -> None:
        below = [k[len(prefix) :] for k in KEYS if k.startswith(prefix)]
        objects = [ObjectInfo(prefix + r, 1, '"e"', 0.0) for r in below if "/" not in r]
        prefixes = sorted({prefix + r.split("/")[0] + "/" for r in below if "/" in r})
        await on_page(Listing(objects, prefixes))


@pytest.fixture
def filesystem(tmp_path: Path) -> Iterator[Callable[[], Filesystem]]:
    index = MetadataIndex(tmp_path)

    def make() -> Filesystem:
        config = options.make_config("bucket", Path("/mnt"), options.defaults(options.MOUNT))
        async_index = AsyncMetadataIndex(index, trio.CapacityLimiter(1))
        namespace = Namespace(FakeStore(), async_index, Scope("bucket"), "", ttl=60)  # type: ignore[arg-type]
        return Filesystem(config, namespace, None, None, Stats(), None)  # type: ignore[arg-type]

    yield make
    index.close()


def test_dot_entries_first_with_the_right_inodes(filesystem: Callable[[], Filesystem]) -> None:
    async def main() -> None:
        fs = filesystem()
        root = await fs.opendir(1)
        listing = [(e.name, e.ino, e.next_id) for e in await read_dir(fs, root, 0)]
        names = [name for name, _, _ in listing]
        assert names == [".", "..", "a.txt", "sub", "z.txt"]
        assert listing[:2] == [(".", 1, 1), ("..", 1, 2)]  # the root's parent is the root
        assert [next_id for _, _, next_id in listing] == [1, 2, 3, 4, 5]

        sub_ino = await fs.lookup(1, "sub")
        sub = await fs.opendir(sub_ino.ino)
        entries = {e.name: e for e in await read_dir(fs, sub, 0)}
        assert list(entries) == [".", "..", "b.txt", "c.txt", "deep"]
        assert entries["."].ino == sub_ino.ino
        assert entries[".."].ino == 1
        assert entries["."].is_dir and entries[".."].is_dir

    trio.run(main)


def test_paging_resumes_after_each_offset(filesystem: Callable[[], Filesystem]) -> None:
    async def main() -> None:
        fs = filesystem()
        fh = await fs.opendir(1)
        whole = [e.name for e in await read_dir(fs, fh, 0)]
        for start in range(len(whole) + 1):
            assert [e.name for e in await read_dir(fs, fh, start)] == whole[start:], start
        # one entry per call, as a kernel with a tiny buffer would ask
        got, offset = [], 0
        while page := list(await read_dir(fs, fh, offset))[:1]:
            got.append(page[0].name)
            offset = page[0].next_id
        assert got == whole

    trio.run(main)


def test_lookup_counts_balance_when_the_kernel_forgets(
    filesystem: Callable[[], Filesystem],
) -> None:
    """Every name handed out but ``.`` and ``..`` carries a kernel reference, except the one
    the kernel's full buffer refused (given back); the kernel forgets exactly those it took:
    the table must return to the root (and the looked-up dir)."""

    async def main() -> None:
        fs = filesystem()
        sub = await fs.lookup(1, "sub")
        for ino, room in ((1, 100), (sub.ino, 3)):  # sub: a buffer of three names a request
            fh = await fs.opendir(ino)
            taken, offset, full = [], 0, True
            while full:
                full = False
                for n, item in enumerate(await fs.readdir(fh, offset)):
                    if n == room:
                        fs.readdir_refused(item)
                        full = True
                        break
                    offset = item[1]
                    if item[0] not in (".", ".."):
                        taken.append(item[2])
            await fs.releasedir(fh)
            for taken_ino in taken:
                fs.forget(taken_ino, 1)
        assert len(fs.inodes) == 2  # root and sub (still looked up once)
        fs.forget(sub.ino, 1)
        assert len(fs.inodes) == 1

    trio.run(main)
