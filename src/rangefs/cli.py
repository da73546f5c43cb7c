"""Command line: argv and fstab ``-o`` options to a :class:`Config`, subcommands, exit codes.

Exit codes: 0 success, 1 the operation failed (mount could not be made, a prefetch failed),
2 bad usage or options. A user error is one line on stderr, never a traceback.
"""

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rangefs import __version__
from rangefs import config as cfg
from rangefs.errors import UsageError, UserError
from rangefs.readiness import Notifier

COMMANDS = ("mount", "prefetch", "status", "cache", "demo")
USAGE_ERROR = 2
FAILED = 1

# Options mount(8), systemd and fuse add to fstab lines: accepted and ignored.
IGNORED_OPTIONS = {
    "rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto",
    "user", "nouser", "users", "owner", "group", "_netdev", "nofail", "defaults", "async",
    "sync", "atime", "noatime", "relatime", "strictatime", "nodiratime", "lazytime",
    "default_permissions", "bg", "fg",
}  # fmt: skip
IGNORED_OPTION_PREFIXES = (
    "x-",
    "comment=",
    "context=",
    "fscontext=",
    "defcontext=",
    "rootcontext=",
)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line + a pointer to --help, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def size_arg(text: str) -> int:
    try:
        return cfg.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def mode_arg(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal umask: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"umask out of range: {text!r}")
    return value


def _number(kind: type, minimum: float, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` no smaller than ``minimum``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {text!r}")
        return value

    return parse


nonneg_float = _number(float, 0, "a number")
positive_int = _number(int, 1, "an integer")
nonneg_int = _number(int, 0, "an integer")


def add_s3_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("S3 connection (credentials come from the standard AWS chain)")
    g.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for MinIO, Ceph RGW, "
        "SeaweedFS, Aliyun OSS... (default: AWS S3 for the region)",
    )
    g.add_argument("--region", help="AWS region (default: from the AWS config/environment)")
    g.add_argument("--profile", help="profile from ~/.aws/credentials and ~/.aws/config")
    g.add_argument(
        "--addressing-style",
        choices=cfg.ADDRESSING_STYLES,
        default="path",
        help="path: http://host/BUCKET/key (MinIO, Ceph, SeaweedFS); virtual: "
        "http://BUCKET.host/key (AWS, Aliyun OSS requires it) (default: %(default)s)",
    )
    g.add_argument(
        "--connect-timeout",
        type=nonneg_float,
        default=cfg.DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="TCP connect timeout per request (default: %(default)s)",
    )
    g.add_argument(
        "--read-timeout",
        type=nonneg_float,
        default=cfg.DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help="socket read timeout per request (default: %(default)s)",
    )
    g.add_argument(
        "--retries",
        type=positive_int,
        default=cfg.DEFAULT_RETRIES,
        metavar="N",
        help="attempts per request before the read fails with EIO (default: %(default)s)",
    )
    g.add_argument(
        "--retry-seconds",
        type=nonneg_float,
        default=cfg.DEFAULT_RETRY_SECONDS,
        metavar="SECONDS",
        help="total time one request may spend retrying (default: %(default)s)",
    )


def add_cache_dir_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=cfg.default_cache_dir(),
        metavar="DIR",
        help="where fetched chunks are kept; also the resume checkpoint (default: %(default)s)",
    )


def add_cache_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cache")
    add_cache_dir_option(g)
    g.add_argument(
        "--cache-size",
        type=size_arg,
        default=cfg.DEFAULT_CACHE_SIZE,
        metavar="SIZE",
        help="disk cache limit, least recently used chunks evicted first (default: 10G)",
    )
    g.add_argument(
        "--chunk-size",
        type=size_arg,
        default=cfg.DEFAULT_CHUNK_SIZE,
        metavar="SIZE",
        help="bytes per Range GET and per cached chunk, K/M/G suffixes (default: 8M)",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="rangefs",
        description="Mount an S3 bucket read-only. Every read becomes chunk-aligned Range GETs; "
        "every chunk is kept, checksummed, in a disk cache that survives remounts and crashes.",
    )
    parser.add_argument("--version", action="version", version=f"rangefs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    m = sub.add_parser(
        "mount",
        help="mount a bucket (default command)",
        description="Mount SOURCE (BUCKET, BUCKET/PREFIX or s3://BUCKET[/PREFIX]) read-only on "
        "MOUNTPOINT. Returns 0 once the mount is live; unmount with 'umount MOUNTPOINT' or "
        "'fusermount3 -u MOUNTPOINT'. Every --long-option can also be given in the fstab form "
        "'-o name=value,flag' ('-' and '_' interchangeable).",
    )
    m.add_argument("source", metavar="SOURCE")
    m.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    m.add_argument(
        "-o",
        dest="fstab_options",
        action="append",
        default=[],
        metavar="OPTS",
        help="comma-separated options, e.g. -o endpoint_url=http://h:9000,allow_other",
    )
    m.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground and log to stderr (for systemd and debugging)",
    )
    add_s3_options(m)
    add_cache_options(m)
    g = m.add_argument_group("filesystem")
    g.add_argument(
        "--metadata-ttl",
        type=nonneg_float,
        default=cfg.DEFAULT_METADATA_TTL,
        metavar="SECONDS",
        help="how long listings, sizes and ETags are trusted (default: %(default)s)",
    )
    g.add_argument(
        "--uid",
        type=nonneg_int,
        default=os.getuid(),
        help="owner of all files (default: your uid, %(default)s)",
    )
    g.add_argument(
        "--gid",
        type=nonneg_int,
        default=os.getgid(),
        help="group of all files (default: your gid, %(default)s)",
    )
    g.add_argument(
        "--umask",
        type=mode_arg,
        default=0o022,
        metavar="OCTAL",
        help="masks the modes r--r--r-- (files) and r-xr-xr-x (dirs) (default: 022)",
    )
    g.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users access the mount (needs user_allow_other in "
        "/etc/fuse.conf for non-root); permissions are then checked by the kernel",
    )
    g = m.add_argument_group("performance")
    g.add_argument(
        "--parallel",
        type=positive_int,
        default=cfg.DEFAULT_PARALLEL,
        metavar="N",
        help="Range GETs in flight at once (default: %(default)s)",
    )
    g.add_argument(
        "--memory-limit",
        type=size_arg,
        default=cfg.DEFAULT_MEMORY_LIMIT,
        metavar="SIZE",
        help="memory for chunks in flight and being served, all files "
        f"(default: {cfg.DEFAULT_MEMORY_LIMIT // cfg.MiB}M)",
    )
    g.add_argument(
        "--max-readahead",
        type=size_arg,
        default=cfg.DEFAULT_MAX_READAHEAD,
        metavar="SIZE",
        help="largest read-ahead window of a sequential reader "
        f"(default: {cfg.DEFAULT_MAX_READAHEAD // cfg.MiB}M)",
    )
    g.add_argument(
        "--kernel-readahead",
        type=size_arg,
        default=cfg.DEFAULT_KERNEL_READAHEAD_KB * 1024,
        metavar="SIZE",
        help="the kernel's read-ahead for this mount, which sets the FUSE request size; 0 keeps "
        "the kernel default (default: 1M; needs root)",
    )
    g = m.add_argument_group("process")
    g.add_argument(
        "--log-level",
        choices=cfg.LOG_LEVELS,
        default="info",
        help="debug shows each GET (default: %(default)s)",
    )
    g.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="log here (default: stderr in the foreground, syslog in the background)",
    )
    g.add_argument("--pid-file", type=Path, metavar="PATH", help="write the daemon's PID here")
    g.add_argument(
        "--mount-timeout",
        type=nonneg_float,
        default=cfg.DEFAULT_MOUNT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the mount to come up (default: %(default)s)",
    )
    g.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )
    g.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    p = sub.add_parser(
        "prefetch",
        help="fetch files or objects into the cache in parallel (resumable)",
        description="Fetch every missing chunk of PATHs into the cache, in parallel, with a "
        "progress bar; chunks already cached are skipped, so a re-run resumes. PATH is a file or "
        "directory on a rangefs mount (the mount's daemon fetches and caches), or "
        "s3://BUCKET/KEY or s3://BUCKET/PREFIX/ (fetched straight into --cache-dir; use the "
        "--chunk-size of the mount that will read them). Exits 1 if any chunk failed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=cfg.DEFAULT_PARALLEL,
        help="chunks fetched in parallel (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_s3_options(p)
    add_cache_options(p)

    p = sub.add_parser(
        "status",
        help="how much of a file on a mount is cached",
        description="For each file on a rangefs mount: its S3 URI, pinned ETag, cached bytes "
        "and a compact chunk map (# cached, + partly, . missing).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)

    p = sub.add_parser("cache", help="inspect, verify or empty a cache directory")
    p.add_argument("action", choices=("stats", "verify", "clear"),
                   help="stats: size and objects; verify: re-check every checksum and drop bad "
                        "chunks; clear: delete every cached chunk")  # fmt: skip
    add_cache_dir_option(p)

    sub.add_parser(
        "demo",
        help="start a local S3 server with sample data, mount it and copy a large file off it",
        description="The embedded default: starts SeaweedFS on 127.0.0.1, seeds sample objects, "
        "mounts them with rangefs, copies the largest with cp and reports what happened.",
    )
    return parser


def expand_fstab_options(argv: list[str], parser: Parser) -> list[str]:
    """Turns ``-o a=b,flag`` into ``--a b --flag`` so argparse validates both forms alike."""
    mount_parser = parser._subparsers._group_actions[0].choices["mount"]  # type: ignore[union-attr]
    known = {}
    for action in mount_parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                known[opt[2:].replace("-", "_")] = (opt, action.nargs == 0)
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-o" or (arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--")):
            value = next(it, None) if arg == "-o" else arg[2:]
            if value is None:
                raise UsageError("-o needs a value (see 'rangefs mount --help')")
            for item in filter(None, value.split(",")):
                name, has_value, val = item.partition("=")
                norm = name.strip().replace("-", "_")
                if norm in IGNORED_OPTIONS or item.startswith(IGNORED_OPTION_PREFIXES):
                    continue
                if norm not in known or norm in ("ready_fd", "help"):
                    raise UsageError(
                        f"unknown option: {name!r} (see 'rangefs mount --help')", USAGE_ERROR
                    )
                opt, is_flag = known[norm]
                if is_flag:
                    if has_value and val.lower() not in ("1", "true", "yes", "on"):
                        if val.lower() in ("0", "false", "no", "off"):
                            continue
                        raise UsageError(f"option {name!r} takes no value")
                    out.append(opt)
                elif not has_value:
                    raise UsageError(f"option {name!r} needs a value: {name}=...")
                else:
                    out.append(f"{opt}={val}")
        else:
            out.append(arg)
    return out


def config_from_args(args: argparse.Namespace) -> cfg.Config:
    bucket, prefix = cfg.parse_source(args.source)
    return cfg.Config(
        bucket=bucket,
        prefix=prefix,
        mountpoint=args.mountpoint.absolute(),
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        cache_dir=args.cache_dir.absolute(),
        cache_size=args.cache_size,
        chunk_size=args.chunk_size,
        metadata_ttl=args.metadata_ttl,
        uid=args.uid,
        gid=args.gid,
        umask=args.umask,
        allow_other=args.allow_other,
        log_level=args.log_level,
        log_file=args.log_file.absolute() if args.log_file else None,
        pid_file=args.pid_file.absolute() if args.pid_file else None,
        foreground=args.foreground,
        memory_limit=args.memory_limit,
        max_readahead=args.max_readahead,
        parallel=args.parallel,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        retries=args.retries,
        retry_seconds=args.retry_seconds,
        mount_timeout=args.mount_timeout,
        metrics_addr=args.metrics_addr,
        addressing_style=args.addressing_style,
        kernel_readahead_kb=args.kernel_readahead // 1024,
    )


def cmd_mount(args: argparse.Namespace, argv: list[str]) -> int:
    from rangefs import mount

    config = config_from_args(args)
    if args.ready_fd is None:
        if config.endpoint_url and "://" not in config.endpoint_url:
            raise UsageError(
                f"--endpoint-url must be a URL like http://host:port, got {config.endpoint_url!r}"
            )
        if config.metrics_addr:
            from rangefs.metrics import parse_addr

            parse_addr(config.metrics_addr)
        mount.check_mountpoint(config.mountpoint, heal=False)
        if not config.foreground:
            for warning in mount.spawn_daemon(argv, config):
                print(f"rangefs: warning: {warning}", file=sys.stderr)
            return 0
    try:
        mount.run_daemon(config, Notifier(args.ready_fd))
    except UserError as exc:
        return exit_status(exc)  # logged, and told to the waiting parent
    return 0


def exit_status(exc: UserError) -> int:
    return USAGE_ERROR if isinstance(exc, UsageError) else FAILED


def normalise_argv(argv: list[str]) -> list[str]:
    """``rangefs SOURCE MOUNTPOINT -o ...`` (how mount.fuse3 calls us) means ``rangefs mount``."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        return ["mount", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        if argv and argv[0] == "mount":
            argv = expand_fstab_options(argv, parser)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return USAGE_ERROR
        if args.command == "mount":
            return cmd_mount(args, argv)
        if args.command == "prefetch":
            from rangefs.tools import cmd_prefetch

            return cmd_prefetch(args)
        if args.command == "status":
            from rangefs.tools import cmd_status

            return cmd_status(args)
        if args.command == "cache":
            from rangefs.tools import cmd_cache

            return cmd_cache(args)
        if args.command == "demo":
            from rangefs.demo import run_demo

            return run_demo()
        parser.print_help()
        return USAGE_ERROR
    except UserError as exc:
        print(f"rangefs: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("rangefs: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("RANGEFS_TRACEBACK"):
            raise
        print(
            f"rangefs: internal error: {exc!r} (set RANGEFS_TRACEBACK=1 for details)",
            file=sys.stderr,
        )
        return 1
