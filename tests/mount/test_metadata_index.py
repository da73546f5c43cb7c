"""The metadata index from outside: a remount within ``--metadata-ttl`` answers ``ls``,
``find`` and ``stat`` without a LIST or HEAD (counted at the proxy), a daemon killed mid-
listing leaves an index the next mount can use, and a damaged index file costs one log line,
not the mount."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import Mount, rangefs_cli, run, wait_for
from tests.support.proxy import CountingProxy, RequestRecord
from tests.support.servers import DevServer

MANY = 1500  # keys in many/: two LIST pages of at most 1000
UPLOAD_THREADS = 10  # the admin client's connection pool


def body(i: int) -> bytes:
    return f"key {i}\n".encode()


@pytest.fixture(scope="session")
def many_keys(s3server: DevServer) -> Iterator[str]:
    """One bucket for the session: ``many/`` holds MANY small keys and a subdirectory,
    uploaded once, in parallel."""
    client = s3server.client()
    bucket = "t-index-many-keys"
    client.create_bucket(Bucket=bucket)
    puts = [(f"many/k{i:05d}.txt", body(i)) for i in range(MANY)]
    puts += [("many/sub/inner.txt", b"inner\n"), ("top.txt", b"top\n")]
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), puts))
    yield bucket


def listings(proxy: CountingProxy, prefix: str | None = None) -> list[RequestRecord]:
    """The ListObjectsV2 requests the proxy saw (of ``prefix`` if given), without the
    mount's one-key access check (``max-keys=1``)."""
    out = []
    for record in proxy.matching("GET"):
        query = urllib.parse.parse_qs(record.query, keep_blank_values=True)
        is_listing = "list-type" in query and query.get("max-keys") != ["1"]
        if record.key is None and is_listing and prefix in (None, *query.get("prefix", [""])):
            out.append(record)
    return out


def look(mount: Mount) -> tuple[list[str], list[str], str]:
    """What a user looks at: ``ls many``, ``find`` over the mount, ``stat`` of a file."""
    ls = run(["ls", str(mount.path / "many")], timeout=60)
    find = run(["find", str(mount.path)], timeout=60)
    stat = run(["stat", "-c", "%s %Y %F", str(mount.path / "many" / "k01234.txt")], timeout=30)
    for done in (ls, find, stat):
        assert done.returncode == 0, done.stderr
    paths = sorted(os.path.relpath(p, mount.path) for p in find.stdout.split())
    return ls.stdout.split(), paths, stat.stdout.strip()


def expected_names() -> list[str]:
    return sorted([f"k{i:05d}.txt" for i in range(MANY)] + ["sub"])


@pytest.mark.timeout(120)
def test_a_remount_within_the_ttl_lists_nothing(
    many_keys: str, proxy: CountingProxy, proxied_mount: Callable[..., Mount]
) -> None:
    first = proxied_mount(many_keys)
    seen = look(first)
    assert seen[0] == expected_names()
    assert len(seen[1]) == 1 + 2 + MANY + 2  # ., many, top.txt, the keys, sub, sub/inner.txt
    assert seen[2] == f"{len(body(1234))} {seen[2].split()[1]} regular file"
    assert len(listings(proxy, "many/")) == 2, "1500 keys: two pages"
    first.unmount()

    proxy.reset()
    again = proxied_mount(many_keys)
    assert look(again) == seen
    assert listings(proxy) == [], "ls, find and stat answered from the index"
    assert proxy.count("HEAD") == 0
    assert (again.path / "many" / "k00007.txt").read_bytes() == body(7)


@pytest.mark.timeout(120)
def test_a_remount_after_the_ttl_lists_again(
    many_keys: str, proxy: CountingProxy, proxied_mount: Callable[..., Mount]
) -> None:
    first = proxied_mount(many_keys, "--metadata-ttl", "1")
    assert run(["ls", str(first.path / "many")]).stdout.split() == expected_names()
    first.unmount()
    expired = time.time() + 1.1
    wait_for(lambda: time.time() > expired, timeout=10, what="the TTL to pass")
    proxy.reset()
    again = proxied_mount(many_keys, "--metadata-ttl", "1")
    assert run(["ls", str(again.path / "many")]).stdout.split() == expected_names()
    assert len(listings(proxy, "many/")) == 2


@pytest.mark.timeout(120)
def test_kill_9_during_a_big_listing_leaves_a_usable_index(
    many_keys: str, proxy: CountingProxy, proxied_mount: Callable[..., Mount]
) -> None:
    first = proxied_mount(many_keys)
    assert "many" in os.listdir(first.path)  # the root is listed and complete
    proxy.set_faults(latency=2.0)  # every request waits: the second page is still on its way
    ls = subprocess.Popen(
        ["ls", str(first.path / "many")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(
            lambda: (
                [(r.status, r.finished is not None) for r in listings(proxy, "many/")]
                == [(200, True), (0, False)]
            ),
            timeout=30,
            what="page 1 of many/ answered and page 2 on its way",
        )
        first.kill()
    finally:
        ls.wait(timeout=30)
    proxy.clear_faults()
    proxy.reset()

    again = proxied_mount(many_keys)
    assert run(["ls", str(again.path / "many")]).stdout.split() == expected_names()
    assert len(listings(proxy, "many/")) == 2, "listed again: no half listing was kept"
    assert listings(proxy, "") == [], "the root's complete listing was kept"
    assert "Traceback" not in again.log()


@pytest.mark.timeout(120)
def test_a_damaged_index_costs_one_log_line_not_the_mount(
    many_keys: str, proxy: CountingProxy, proxied_mount: Callable[..., Mount], tmp_path: Path
) -> None:
    first = proxied_mount(many_keys)
    assert run(["ls", str(first.path / "many")]).stdout.split() == expected_names()
    first.unmount()
    stats = rangefs_cli("cache", "stats", "--cache-dir", str(tmp_path / "cache"))
    assert stats.returncode == 0, stats.stderr
    assert f"index      2 listings, {MANY + 2 + 1} entries" in stats.stdout, stats.stdout

    index = tmp_path / "cache" / "metadata.db"
    index.write_bytes(b"\x00garbage, not SQLite\n" * 1000)
    again = proxied_mount(many_keys)
    assert run(["ls", str(again.path / "many")]).stdout.split() == expected_names()
    lines = [line for line in again.log().splitlines() if "metadata index" in line]
    assert len(lines) == 1 and "damaged or not ours" in lines[0], lines
    assert "Traceback" not in again.log()
    assert (index.parent / "metadata.db.damaged").exists()
    again.unmount()

    cleared = rangefs_cli("cache", "clear", "--cache-dir", str(tmp_path / "cache"))
    assert cleared.returncode == 0 and "2 listings dropped" in cleared.stdout, cleared.stdout
    stats = rangefs_cli("cache", "stats", "--cache-dir", str(tmp_path / "cache"))
    assert "index      0 listings, 0 entries" in stats.stdout, stats.stdout
