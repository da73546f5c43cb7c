"""Command line: argv and fstab ``-o`` options to a :class:`Config`, subcommands, exit codes.

Exit codes: 0 success, 1 the operation failed (mount could not be made, a prefetch failed),
2 bad usage or options. A user error is one line on stderr, never a traceback.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rangefs import __version__, options
from rangefs.config import Config, format_timestamp
from rangefs.daemon.readiness import Notifier
from rangefs.errors import UsageError, UserError
from rangefs.options import expand_fstab_options

COMMANDS = ("mount", "prefetch", "pin", "unpin", "status", "cache", "demo")
USAGE_ERROR = 2
FAILED = 1


class Parser(argparse.ArgumentParser):
    """Usage errors as one line + a pointer to --help, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


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
    options.add_options(m, options.MOUNT)

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
    options.add_options(p, options.PREFETCH)

    p = sub.add_parser(
        "pin",
        help="fetch files or trees on a mount into the cache and keep them there",
        description="Pin PATHs (files or directories on a rangefs mount): every chunk is "
        "fetched through the mount, with a progress bar, and never evicted; a pin follows the "
        "key, so a changed object is fetched again (when online) and the old version kept "
        "until the new one is whole. Refused, with nothing pinned, when the mount's pinned "
        "bytes would pass its --pin-limit. Exits 1 if any chunk failed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    options.add_options(p, options.PIN)

    p = sub.add_parser(
        "unpin",
        help="let pinned files be evicted again",
        description="Unpin PATHs (files or directories on a rangefs mount): their chunks stay "
        "cached and are evicted like any other from now on.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)

    p = sub.add_parser(
        "status",
        help="how much of a file on a mount is cached",
        description="For each file on a rangefs mount: its S3 URI, ETag, cached bytes, a "
        "compact chunk map (# cached, + partly, . missing) and whether it is pinned. For a "
        "directory: what the mount has pinned, and the pinned files below it.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)

    p = sub.add_parser("cache", help="inspect, verify or empty a cache directory")
    p.add_argument("action", choices=("stats", "verify", "clear"),
                   help="stats: size and objects; verify: re-check every checksum and drop bad "
                        "chunks; clear: delete every cached chunk")  # fmt: skip
    options.add_options(p, options.CACHE)

    sub.add_parser(
        "demo",
        help="start a local S3 server with sample data, mount it and copy a large file off it",
        description="The embedded default: starts SeaweedFS on 127.0.0.1, seeds sample objects, "
        "mounts them with rangefs, copies the largest with cp and reports what happened.",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return options.make_config(args.source, args.mountpoint, options.values(args, options.MOUNT))


def cmd_mount(args: argparse.Namespace, argv: list[str]) -> int:
    from rangefs.daemon import mount

    given = options.values(args, options.MOUNT)
    config = options.make_config(args.source, args.mountpoint, given)
    ready_fd = given["ready_fd"]
    if ready_fd is None:
        mount.check_mountpoint(config.mountpoint, heal=False)
        if not config.foreground:
            for warning in mount.spawn_daemon(pin_version_at(argv, config), config):
                print(f"rangefs: warning: {warning}", file=sys.stderr)
            return 0
    try:
        mount.run_daemon(config, Notifier(ready_fd))
    except UserError as exc:
        return exit_status(exc)  # logged, and told to the waiting parent
    return 0


def pin_version_at(argv: list[str], config: Config) -> list[str]:
    """The daemon's argv with ``--version-at`` as the absolute time this command read: a
    duration such as ``2h`` must not be read again, later, by the daemon."""
    if config.version_at is None:
        return argv
    end = argv.index("--") if "--" in argv else len(argv)
    pinned = ["--version-at", format_timestamp(config.version_at)]
    return [*argv[:end], *pinned, *argv[end:]]


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
            argv = expand_fstab_options(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return USAGE_ERROR
        if args.command == "mount":
            return cmd_mount(args, argv)
        if args.command in (options.PREFETCH, options.PIN, options.CACHE):
            args = argparse.Namespace(**{**vars(args), **options.values(args, args.command)})
        if args.command == "prefetch":
            from rangefs.commands.tools import cmd_prefetch

            return cmd_prefetch(args)
        if args.command == "pin":
            from rangefs.commands.tools import cmd_pin

            return cmd_pin(args)
        if args.command == "unpin":
            from rangefs.commands.tools import cmd_unpin

            return cmd_unpin(args)
        if args.command == "status":
            from rangefs.commands.tools import cmd_status

            return cmd_status(args)
        if args.command == "cache":
            from rangefs.commands.tools import cmd_cache

            return cmd_cache(args)
        if args.command == "demo":
            from rangefs.commands.demo import run_demo

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
