"""The mount's lifecycle: preflight checks, building the parts, FUSE init, serving, clean close.

``rangefs mount`` (the parent) validates what it can, then starts the daemon (this module,
``--foreground`` with a readiness pipe) in a new session and waits until the daemon says the
mount is live or why it is not. So the command returns 0 only for a working mount, and a
failure is one line on the parent's stderr, never a mount left behind.
"""

import ctypes
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import cast

import pyfuse3
import trio

from rangefs.cache.chunk_cache import PRIVATE_UMASK, ChunkCache, ensure_private_dir
from rangefs.cache.metadata_index import MetadataIndex, Scope
from rangefs.config import Config, format_size, format_timestamp
from rangefs.daemon import sdnotify
from rangefs.daemon.core import META_THREADS, Core, build_core
from rangefs.daemon.logsetup import setup_logging
from rangefs.daemon.readiness import Notifier, Waiter
from rangefs.errors import AccessDenied, NotFound, RemoteError, Unreachable, UserError
from rangefs.fs.fuse_ops import FuseOperations
from rangefs.remote.retry import MOUNT_CHECK
from rangefs.remote.s3 import store_factory
from rangefs.remote.store import ObjectStore
from rangefs.remote.versions import NotVersioned, VersionedStore, VersionSource
from rangefs.stats import Stats

log = logging.getLogger("rangefs")

FUSE_MAX_TASKS = 64  # concurrent FUSE requests; most wait on a fetch, not the CPU
StoreFactory = Callable[[Config, Stats], ObjectStore]
DEAD_MOUNT_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)  # daemon gone / connection aborted
M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
TRIM_THRESHOLD = 1024 * 1024
MMAP_THRESHOLD = 4 * 1024 * 1024  # above a FUSE read's buffer (1-2 MiB), below a chunk (8 MiB)


def fusermount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["fusermount3", *args], capture_output=True, text=True, timeout=30, check=False
    )


def _is_dead_mount(path: Path) -> bool:
    """A FUSE mount whose daemon is gone: statfs always asks the daemon (stat may be cached)."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno in DEAD_MOUNT_ERRNOS
    return False


def check_mountpoint(path: Path, heal: bool = True) -> None:
    """Refuses a missing, non-directory or already-mounted mountpoint; heals a dead FUSE mount
    (``heal=False`` leaves that to the daemon, so the message lands in the daemon's log)."""
    try:
        dead = _is_dead_mount(path)
        if dead and not heal:
            return
        if dead:
            log.warning("mountpoint %s is a dead FUSE mount (daemon gone): unmounting it", path)
            fusermount("-uz", str(path))
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise UserError(f"mountpoint {path} is already a mount point")


def open_cache(config: Config, stats: Stats) -> ChunkCache:
    try:
        ensure_private_dir(config.cache_dir, allow_shared=config.shared_cache)
        probe = config.cache_dir / f".rangefs-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return ChunkCache(config.cache_dir, config.cache_size, stats)
    except UserError:
        raise
    except Exception as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cache dir {config.cache_dir} is not usable: {reason}") from None


def warn_over_pin_limit(cache: ChunkCache, config: Config) -> None:
    """Pins are never dropped for a smaller --pin-limit or --cache-size: say so at mount."""
    pins = cache.pin_summary()
    if pins.bytes > config.pin_bytes:
        log.warning(
            "pinned files hold %s, over --pin-limit %s: they stay cached (the cache may pass "
            "--cache-size by them); 'rangefs unpin' some to make room",
            format_size(pins.bytes), format_size(config.pin_bytes),
        )  # fmt: skip


def open_index(config: Config) -> MetadataIndex:
    """The metadata index in the cache dir (made private by :func:`open_cache` first)."""
    try:
        return MetadataIndex(config.cache_dir)
    except Exception as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"metadata index in {config.cache_dir} is not usable: {reason}") from None


def s3_store(config: Config, stats: Stats) -> ObjectStore:
    """The default store: boto3, one connection pool for GETs, listings and the check."""
    return store_factory(config.s3, pool=config.parallel + META_THREADS + 2, stats=stats)(
        config.bucket
    )


def check_bucket(store: ObjectStore, config: Config) -> bool:
    """Proves the bucket can be listed; True if SOURCE's prefix holds at least one key.

    Any failure is a :class:`UserError`, except that with ``--allow-offline`` an S3 that
    cannot be reached raises :class:`Unreachable` (see :func:`offline_start`)."""
    where = f" at {config.endpoint_url}" if config.endpoint_url else ""
    try:
        return store.check_access(config.prefix)
    except Unreachable as exc:
        if config.allow_offline:
            raise
        raise UserError(f"cannot reach S3{where}: {exc}") from None
    except NotVersioned:
        raise UserError(
            f"bucket {config.bucket!r}{where} has no versioning: --version-at needs a bucket "
            "whose versioning is enabled (or suspended)"
        ) from None
    except NotFound:
        raise UserError(f"bucket {config.bucket!r} does not exist{where}") from None
    except AccessDenied as exc:
        raise UserError(
            f"access denied to {config.source}{where} ({exc}); check credentials and --profile"
        ) from None
    except RemoteError as exc:
        raise UserError(f"cannot reach S3{where}: {exc}") from None


def offline_start(config: Config, index: MetadataIndex, exc: Unreachable) -> str:
    """What ``--allow-offline`` says when S3 cannot be reached at mount time; a UserError
    unless the index holds a listing of SOURCE (an earlier mount made one)."""
    where = f" at {config.endpoint_url}" if config.endpoint_url else ""
    if not index.holds(Scope.of(config), config.prefix):
        raise UserError(
            f"cannot reach S3{where}: {exc}; --allow-offline needs a listing of "
            f"{config.source} in the metadata index in {config.cache_dir}, and it holds none "
            "(mount it once while S3 answers)"
        )
    return (
        f"S3 cannot be reached ({exc}): mounting {config.source} offline (--allow-offline), "
        "serving the listings and chunks in the cache; online as soon as S3 answers"
    )


def fuse_options(config: Config) -> set[str]:
    fsname = f"{config.bucket}/{config.prefix}".rstrip("/").replace(",", "_")
    options = set(pyfuse3.default_options) | {
        f"fsname={fsname}",
        "subtype=rangefs",
        "ro",
        "noatime",
    }
    if config.allow_other:
        options.add("allow_other")
    return options


class Daemon:
    """The trio side of one mount: serves FUSE requests and the tasks around them."""

    def __init__(self, config: Config, core: Core) -> None:
        self.config = config
        self.core = core

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.core.run)
            nursery.start_soon(self._watch_signals)
            nursery.start_soon(self._watchdog)
            nursery.start_soon(self._tune_readahead)
            await pyfuse3.main(max_tasks=FUSE_MAX_TASKS)
            nursery.cancel_scope.cancel()

    async def _tune_readahead(self) -> None:
        """After the kernel's INIT (which resets the read-ahead), raise it; a stat forces INIT."""
        cfg = self.config
        await trio.to_thread.run_sync(os.stat, cfg.mountpoint)
        await trio.to_thread.run_sync(
            tune_kernel_readahead, cfg.mountpoint, cfg.kernel_readahead_kb
        )

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the trio loop itself: if the loop wedges, systemd restarts us."""
        period = sdnotify.watchdog_period()
        if period is None:
            return
        while True:
            sdnotify.notify("WATCHDOG=1")
            await trio.sleep(period)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info(
                    "got %s: unmounting %s", signal.Signals(signum).name, self.config.mountpoint
                )
                pyfuse3.terminate()
                return


def tune_malloc() -> None:
    """Returns freed chunk buffers to the OS soon, and keeps read buffers off mmap.

    glibc raises its mmap threshold after the first large free, so later 8 MiB chunk buffers
    come from per-thread arenas that keep freed memory: RSS then grows far past the chunk
    budget. A low trim threshold and few arenas keep RSS close to what is really in use.
    Setting it also freezes the mmap threshold at 128 KiB, so every FUSE read's 1 MiB buffer
    was mapped and unmapped (256 page faults a read: ~0.3 ms of the trio thread's time, a
    fifth of a cached copy's CPU): buffers below :data:`MMAP_THRESHOLD` come from the heap.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def tune_kernel_readahead(mountpoint: Path, kib: int) -> None:
    """Asks the kernel for 1 MiB FUSE read requests instead of 128 KiB ones.

    The per-request cost of pyfuse3 dominates sequential reads at 128 KiB; the read-ahead
    of the mount's bdi (found through mountinfo) decides the request size. The kernel sets
    it at INIT, so this runs after INIT. Needs root; skipped otherwise.
    """
    if kib <= 0:
        return
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == str(mountpoint):
                Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb").write_text(str(kib))
                log.debug("kernel read-ahead of %s set to %d KiB", mountpoint, kib)
    except OSError as exc:
        log.debug("kernel read-ahead of %s left as is: %s", mountpoint, exc)


def _start(
    config: Config, notifier: Notifier, make_store: StoreFactory, stack: ExitStack
) -> Daemon:
    """Builds and mounts everything, registering each close on ``stack`` as soon as it is
    opened, so whichever step fails, what was opened before it is closed."""
    check_mountpoint(config.mountpoint)
    stats = Stats()
    cache = open_cache(config, stats)
    stack.callback(cache.close)
    warn_over_pin_limit(cache, config)
    index = open_index(config)
    stack.callback(index.close)
    store = make_store(config, stats)
    if config.version_at is not None:
        store = VersionedStore(cast(VersionSource, store), config.version_at)
        log.info("showing s3://%s as of %s", config.bucket, format_timestamp(config.version_at))
    online = True
    try:
        found = check_bucket(store.with_retries(MOUNT_CHECK), config)
    except Unreachable as exc:
        found, online = True, False
        message = offline_start(config, index, exc)
        log.warning("%s", message)
        notifier.warn(message)
    if not found:
        message = f"{config.source} holds no object yet (a typo in the prefix?); mounting it empty"
        log.warning("%s", message)
        notifier.warn(message)
    core = build_core(config, store, cache, index, stats, online=online)
    if config.metrics_addr:
        from rangefs.daemon.metrics import serve_metrics

        stack.callback(serve_metrics(config.metrics_addr, stats, cache.volume))
    try:
        pyfuse3.init(FuseOperations(core.fs), str(config.mountpoint), fuse_options(config))
    except RuntimeError as exc:
        raise UserError(f"cannot mount on {config.mountpoint}: {exc}") from None
    stack.callback(pyfuse3.close, unmount=True)
    return Daemon(config, core)


def run_daemon(config: Config, notifier: Notifier, make_store: StoreFactory = s3_store) -> None:
    """Runs the mount in this process until unmounted; ``notifier`` hears ready or why not.

    ``make_store`` builds the object store (boto3 by default), as mountpoint-s3's
    ``run(client_builder, args)``: a test or a benchmark can mount over another store.
    Raises :class:`UserError` if the mount could not be made.
    """
    tune_malloc()
    os.umask(PRIVATE_UMASK)  # the cache, the log and the pid file are nobody else's
    with ExitStack() as stack:
        try:
            setup_logging(config)
            daemon = _start(config, notifier, make_store, stack)
        except UserError as exc:
            log.error("mount failed: %s", exc)
            notifier.send(str(exc))
            raise
        if config.pid_file:
            config.pid_file.write_text(f"{os.getpid()}\n")
            stack.callback(config.pid_file.unlink, missing_ok=True)
        log.info(
            "mounted %s on %s (chunk %d B, cache %s)",
            config.source,
            config.mountpoint,
            config.chunk_size,
            config.cache_dir,
        )
        notifier.send(None)
        sdnotify.notify("READY=1", f"STATUS=mounted {config.source} on {config.mountpoint}")
        stack.callback(sdnotify.notify, "STOPPING=1")
        clean = False
        try:
            trio.run(daemon.serve)
            clean = True
        except BaseException:
            log.exception("daemon failed")
            raise
        finally:
            stack.close()
            log.info("unmounted %s%s", config.mountpoint, "" if clean else " after an error")


def spawn_daemon(argv: list[str], config: Config) -> list[str]:
    """Starts the daemon in the background and waits until it is mounted or has failed;
    returns the warnings it gave for the user."""
    waiter = Waiter()
    cmd = [sys.executable, "-m", "rangefs", *argv, "--foreground", "--ready-fd", str(waiter.fd)]
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        proc = subprocess.Popen(
            cmd,
            stdin=devnull_in,
            stdout=devnull_out,
            stderr=devnull_out,
            pass_fds=(waiter.fd,),
            start_new_session=True,
            env={**os.environ, "RANGEFS_BACKGROUND": "1"},
        )
    waiter.started()
    outcome = waiter.wait(proc, config.mount_timeout + 5)
    if outcome.ready:
        return outcome.warnings
    text = outcome.error
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
        fusermount("-uz", str(config.mountpoint))
        if not text:
            text = f"the daemon did not become ready within {config.mount_timeout:.0f}s"
    if not text:
        text = f"the daemon exited with status {proc.returncode}"
        if config.log_file:
            text += f" (see {config.log_file})"
    raise UserError(text)
