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
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from rangefs import sdnotify
from rangefs.chunk_cache import ChunkCache
from rangefs.config import Config
from rangefs.errors import AccessDenied, NotFound, RemoteError, UserError
from rangefs.filesystem import Filesystem
from rangefs.fuse_ops import FuseOperations
from rangefs.logsetup import setup_logging
from rangefs.namespace import Namespace
from rangefs.reader import ChunkReader
from rangefs.s3 import RetryPolicy, S3Store, make_client
from rangefs.stats import Stats
from rangefs.store import AsyncStore

log = logging.getLogger("rangefs")

MOUNT_CHECK_RETRY = RetryPolicy(attempts=3, max_seconds=20.0, initial_backoff=0.5)
FUSE_MAX_TASKS = 64  # concurrent FUSE requests; most wait on a fetch, not the CPU
CACHE_THREADS = 4  # disk cache reads/writes at once
META_THREADS = 8  # listings and HEADs at once
MOUNT_FAILED = 1
DEAD_MOUNT_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)  # daemon gone / connection aborted
M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
M_ARENA_MAX = -8
TRIM_THRESHOLD = 1024 * 1024


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
        raise UserError(f"mountpoint {path} does not exist", MOUNT_FAILED) from None
    except OSError as exc:
        raise UserError(f"mountpoint {path}: {exc.strerror}", MOUNT_FAILED) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"mountpoint {path} is not a directory", MOUNT_FAILED)
    if os.path.ismount(path):
        raise UserError(f"mountpoint {path} is already a mount point", MOUNT_FAILED)


def open_cache(config: Config, stats: Stats | None = None) -> ChunkCache:
    try:
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        probe = config.cache_dir / f".rangefs-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return ChunkCache(config.cache_dir, config.cache_size, stats)
    except Exception as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(
            f"cache dir {config.cache_dir} is not usable: {reason}", MOUNT_FAILED
        ) from None


def connect(config: Config, retry: RetryPolicy, stats: Stats | None = None) -> S3Store:
    client = make_client(
        endpoint_url=config.endpoint_url,
        region=config.region,
        profile=config.profile,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        pool=config.parallel + META_THREADS + 2,
        addressing_style=config.addressing_style,
    )
    return S3Store(client, config.bucket, retry, stats)


def check_bucket(store: S3Store, config: Config) -> None:
    where = f" at {config.endpoint_url}" if config.endpoint_url else ""
    try:
        store.check_access(config.prefix)
    except NotFound:
        raise UserError(f"bucket {config.bucket!r} does not exist{where}", MOUNT_FAILED) from None
    except AccessDenied as exc:
        raise UserError(
            f"access denied to {config.source}{where} ({exc}); check credentials and --profile",
            MOUNT_FAILED,
        ) from None
    except RemoteError as exc:
        raise UserError(f"cannot reach S3{where}: {exc}", MOUNT_FAILED) from None


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
    """Everything one mount runs, built from a :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = Stats()
        self.cache = open_cache(config, self.stats)
        policy = RetryPolicy(attempts=config.retries, max_seconds=config.retry_seconds)
        self.s3 = connect(config, policy, self.stats)

    def build(self) -> tuple[Filesystem, ChunkReader]:
        cfg = self.config
        cache_limiter = trio.CapacityLimiter(CACHE_THREADS)
        store = AsyncStore(
            self.s3, trio.CapacityLimiter(META_THREADS), trio.CapacityLimiter(cfg.parallel)
        )
        reader = ChunkReader(
            store,
            self.cache,
            cache_limiter,
            chunk_size=cfg.chunk_size,
            memory_limit=cfg.memory_limit,
            max_readahead=cfg.max_readahead,
            parallel=cfg.parallel,
            stats=self.stats,
        )
        namespace = Namespace(store, cfg.prefix, cfg.metadata_ttl)
        fs = Filesystem(cfg, namespace, reader, self.cache, cache_limiter, self.stats)
        return fs, reader

    async def serve(self, reader: ChunkReader) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
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
    """Returns freed chunk buffers to the OS soon.

    glibc raises its mmap threshold after the first large free, so later 8 MiB chunk buffers
    come from per-thread arenas that keep freed memory: RSS then grows far past the chunk
    budget. A low trim threshold and few arenas keep RSS close to what is really in use.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
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


def run_daemon(config: Config, ready: Callable[[str | None], None]) -> int:
    """Runs the mount in this process until unmounted; ``ready`` gets None or the error."""
    tune_malloc()
    try:
        setup_logging(config)
        check_mountpoint(config.mountpoint)
        daemon = Daemon(config)
        check_bucket(S3Store(daemon.s3.client, config.bucket, MOUNT_CHECK_RETRY), config)
        fs, reader = daemon.build()
        ops = FuseOperations(fs)
        if config.metrics_addr:
            from rangefs.metrics import serve_metrics

            try:
                serve_metrics(config.metrics_addr, daemon.stats, daemon.cache.volume)
            except UserError as exc:
                raise UserError(str(exc), MOUNT_FAILED) from None
        try:
            pyfuse3.init(ops, str(config.mountpoint), fuse_options(config))
        except RuntimeError as exc:
            raise UserError(f"cannot mount on {config.mountpoint}: {exc}", MOUNT_FAILED) from None
    except UserError as exc:
        log.error("mount failed: %s", exc)
        ready(str(exc))
        return exc.exit_code
    if config.pid_file:
        config.pid_file.write_text(f"{os.getpid()}\n")
    log.info(
        "mounted %s on %s (chunk %d B, cache %s)",
        config.source,
        config.mountpoint,
        config.chunk_size,
        config.cache_dir,
    )
    ready(None)
    sdnotify.notify("READY=1", f"STATUS=mounted {config.source} on {config.mountpoint}")
    clean = False
    try:
        trio.run(daemon.serve, reader)
        clean = True
    except BaseException:
        log.exception("daemon failed")
        raise
    finally:
        sdnotify.notify("STOPPING=1")
        pyfuse3.close(unmount=True)
        daemon.cache.close()
        log.info("unmounted %s%s", config.mountpoint, "" if clean else " after an error")
        if config.pid_file:
            config.pid_file.unlink(missing_ok=True)
    return 0


def spawn_daemon(argv: list[str], config: Config) -> int:
    """Starts the daemon in the background and waits until it is mounted or has failed."""
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "rangefs", *argv, "--foreground", "--ready-fd", str(write_fd)]
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        proc = subprocess.Popen(
            cmd,
            stdin=devnull_in,
            stdout=devnull_out,
            stderr=devnull_out,
            pass_fds=(write_fd,),
            start_new_session=True,
            env={**os.environ, "RANGEFS_BACKGROUND": "1"},
        )
    os.close(write_fd)
    deadline = time.monotonic() + config.mount_timeout + 5
    message = b""
    with os.fdopen(read_fd, "rb") as pipe:
        os.set_blocking(pipe.fileno(), False)
        while time.monotonic() < deadline:
            try:
                chunk = pipe.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                message += chunk
            if message.endswith(b"\n") or chunk == b"":
                break
            if proc.poll() is not None and not chunk:
                break
            time.sleep(0.02)
    text = message.decode(errors="replace").strip()
    if text == "ready":
        return 0
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
    raise UserError(text.removeprefix("error: "), MOUNT_FAILED)
