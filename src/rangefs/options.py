"""Every option of ``mount``, ``prefetch`` and ``cache``, declared once in :data:`OPTIONS`.

From that table come the argparse options (with the defaults their help shows), the fstab
``-o name=value,flag`` form, the checking of every value, the :class:`Config` and
:class:`S3Settings` a command runs with, and the option reference in docs/CONFIGURATION.md.
A bad value is a one-line :class:`UsageError` naming the option.
"""

import argparse
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rangefs.config import (
    Config,
    GiB,
    KiB,
    MiB,
    S3Settings,
    compact_size,
    default_cache_dir,
    format_timestamp,
    load_customer_key,
    parse_size,
    parse_source,
    parse_timestamp,
    split_host_port,
)
from rangefs.errors import UsageError

MOUNT, PREFETCH, PIN, CACHE = "mount", "prefetch", "pin", "cache"


# --- kinds of value ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a value is read from text (``parse`` raises ValueError saying what the text is not)
    and shown in help and docs."""

    metavar: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"not a number: {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"not an octal umask: {text!r}") from None


def _flag(text: str) -> bool:
    raise ValueError(f"takes no value: {text!r}")


def choice(*values: str) -> Kind:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(values)})")
        return text

    return Kind("{" + ",".join(values) + "}", parse)


SIZE = Kind("SIZE", parse_size, compact_size)  # bytes; K/M/G/T suffixes, binary
SECONDS = Kind("SECONDS", _seconds)
COUNT = Kind("N", _integer)
UMASK = Kind("OCTAL", _octal, lambda mode: f"{mode:03o}")
PATH = Kind("PATH", lambda text: Path(text).absolute())
TEXT = Kind("TEXT", str)
FLAG = Kind("", _flag, lambda on: "on" if on else "off")
TIMESTAMP = Kind("TIME", parse_timestamp, format_timestamp)  # RFC 3339, or 2h back from now
KEY_FILE = Kind("FILE", load_customer_key, lambda key: str(key.path))  # read when parsed


def _url(value: str) -> str | None:
    return None if "://" in value else "must be a URL like http://host:port"


def _host_port(value: str) -> str | None:
    try:
        split_host_port(value)
    except ValueError:
        return "must be HOST:PORT"
    return None


def _whole_kib(value: int) -> str | None:
    return None if value % KiB == 0 else "must be a whole number of KiB"


# --- the table -----------------------------------------------------------------------------

SAME = "="  # Option.field: the Config field named like the option


@dataclass(frozen=True)
class Option:
    name: str  # the long form without dashes: "chunk-size"; "-o chunk_size=..." in fstab
    kind: Kind
    default: Any  # a value of the kind (bytes, seconds...), None (unset), or a function of ()
    help: str
    group: str  # the help section, and the task it serves in the docs
    commands: tuple[str, ...]  # the subcommands that take it
    field: str | None = SAME  # the Config/S3Settings field it fills; None: the command reads it
    to_field: Callable[[Any], Any] = lambda value: value  # the option's value -> the field's
    default_text: str | None = None  # what the default is, when it is no fixed value
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # the value must be greater than this
    check: Callable[[Any], str | None] | None = None  # returns "must be ..." when it is not
    metavar: str | None = None
    short: str | None = None
    hidden: bool = False  # plumbing: not in help or docs, not reachable through -o

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def target(self) -> str | None:
        return self.dest if self.field == SAME else self.field

    @property
    def is_flag(self) -> bool:
        return self.kind is FLAG

    @property
    def shown_metavar(self) -> str:
        return self.metavar or self.kind.metavar

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def shown_default(self, resolved: bool = False) -> str | None:
        """The default as help (``resolved``: with the value here) and the docs show it."""
        if self.default_text is None:
            return None if self.default is None else self.kind.show(self.default_value())
        if resolved and callable(self.default):
            return f"{self.default_text}; here {self.kind.show(self.default_value())}"
        return self.default_text

    def limits(self) -> str | None:
        show = self.kind.show
        if self.minimum is not None and self.maximum is not None:
            return f"between {show(self.minimum)} and {show(self.maximum)}"
        if self.minimum is not None:
            return f">= {show(self.minimum)}"
        if self.above is not None:
            return f"> {show(self.above)}"
        return None

    def parse(self, text: str) -> Any:
        """The value of ``--name text``, checked; a bad one is a UsageError naming the option."""
        try:
            value = self.kind.parse(text)
        except ValueError as exc:
            raise UsageError(f"--{self.name}: {exc}") from None
        low_ok = (self.minimum is None or value >= self.minimum) and (
            self.above is None or value > self.above
        )
        if not low_ok or (self.maximum is not None and value > self.maximum):
            raise UsageError(f"--{self.name} must be {self.limits()}, got {text!r}")
        problem = self.check(value) if self.check else None
        if problem:
            raise UsageError(f"--{self.name} {problem}, got {text!r}")
        return value


@dataclass(frozen=True)
class Rule:
    """A condition between options, checked once each has its value."""

    names: tuple[str, ...]  # the options' dest names, the arguments of ``holds``
    holds: Callable[..., bool]
    message: str


S3 = "S3 connection"
CACHE_GROUP = "cache"
FILESYSTEM = "filesystem"
PERFORMANCE = "performance"
PROCESS = "process"
PREFETCH_GROUP = "prefetch"
GROUP_NOTES = {S3: "credentials come from the standard AWS chain, refreshed as they expire"}

DEFAULT_PARALLEL = 32  # most Range GETs in flight: enough for ~10 Gb/s at 50 MB/s a connection
DEFAULT_JOBS = 8  # files or chunks prefetch reads through the mount at once
WITH_S3 = (MOUNT, PREFETCH)
WITH_CACHE = (MOUNT, PREFETCH)

OPTIONS: tuple[Option, ...] = (
    # S3 connection
    Option("endpoint-url", TEXT, None, "S3 endpoint for MinIO, Ceph RGW, SeaweedFS, Aliyun "
           "OSS...", S3, WITH_S3, default_text="AWS S3 for the region", metavar="URL",
           check=_url),
    Option("region", TEXT, None, "AWS region", S3, WITH_S3,
           default_text="from the AWS config/environment", metavar="REGION"),
    Option("profile", TEXT, None, "profile from ~/.aws/credentials and ~/.aws/config", S3,
           WITH_S3, default_text="the credential chain", metavar="NAME"),
    Option("addressing-style", choice("path", "virtual", "auto"), None,
           "path: http://host/BUCKET/key (MinIO, Ceph, SeaweedFS); virtual: "
           "http://BUCKET.host/key (AWS, Aliyun OSS requires it); auto: botocore chooses",
           S3, WITH_S3, default_text="virtual for AWS, path with --endpoint-url or an "
           "AWS_ENDPOINT_URL"),
    Option("requester-pays", FLAG, False, "send every request as requester pays "
           "(x-amz-request-payer): needed to read a bucket whose owner bills the reader",
           S3, WITH_S3),
    Option("sse-c-key-file", KEY_FILE, None, "read objects encrypted with this customer key "
           "(SSE-C); the file holds the 32-byte key, raw or in base64", S3, WITH_S3,
           field="sse_c_key", default_text="none: objects are not SSE-C encrypted"),
    Option("connect-timeout", SECONDS, 5.0, "TCP connect timeout per request", S3, WITH_S3,
           above=0.0),
    Option("read-timeout", SECONDS, 30.0, "socket read timeout per request", S3, WITH_S3,
           above=0.0),
    Option("retries", COUNT, 6, "attempts per request before the read fails with EIO", S3,
           WITH_S3, minimum=1),
    Option("retry-seconds", SECONDS, 60.0, "total time one request may spend retrying", S3,
           WITH_S3, minimum=0.0),
    # cache
    Option("cache-dir", PATH, default_cache_dir, "where fetched chunks are kept; also the resume "
           "checkpoint", CACHE_GROUP, (*WITH_CACHE, CACHE), metavar="DIR",
           default_text="$XDG_CACHE_HOME/rangefs, else ~/.cache/rangefs"),
    Option("cache-size", SIZE, 10 * GiB, "disk cache limit, least recently used chunks evicted "
           "first", CACHE_GROUP, WITH_CACHE),
    Option("shared-cache", FLAG, False, "use a cache dir other users can read or that another "
           "user owns; without it such a dir is refused, since cached chunks are the plaintext of "
           "private objects (a mount needs --allow-other too)", CACHE_GROUP, WITH_CACHE),
    Option("chunk-size", SIZE, 8 * MiB, "bytes per cached chunk, and per Range GET of a "
           "sequential reader; equal to the part size of multipart uploads (8M for the AWS CLI "
           "and boto3), S3's ETag proves their bytes",
           CACHE_GROUP, WITH_CACHE, minimum=64 * KiB, maximum=256 * MiB),
    Option("pin-limit", SIZE, None, "most bytes 'rangefs pin' may keep in the cache, never "
           "evicted (pinned files count at their size); a pin that would pass it is refused",
           CACHE_GROUP, (MOUNT,), default_text="half the cache size"),
    Option("proofs", choice("auto", "etag", "off"), "auto", "check bytes against what S3 "
           "vouches for: auto asks S3 (one HEAD) for the additional checksum of objects of 16 "
           "chunks or more, and of any object whose ETag proves nothing; etag asks only for the "
           "latter; off checks nothing (to measure what checking costs)", CACHE_GROUP, (MOUNT,)),
    # filesystem
    Option("metadata-ttl", SECONDS, 60.0, "how long listings, sizes and ETags are trusted, "
           "counted from when they were listed (the metadata index keeps them across remounts)",
           FILESYSTEM, (MOUNT,), minimum=0.0),
    Option("negative-metadata-ttl", SECONDS, None, "how long the kernel may remember that a "
           "name does not exist, so shells, editors and players probing for names do not ask "
           "again", FILESYSTEM, (MOUNT,), default_text="--metadata-ttl", minimum=0.0),
    Option("uid", COUNT, os.getuid, "owner of all files", FILESYSTEM,
           (MOUNT,), default_text="your uid", minimum=0, metavar="UID"),
    Option("gid", COUNT, os.getgid, "group of all files", FILESYSTEM,
           (MOUNT,), default_text="your gid", minimum=0, metavar="GID"),
    Option("umask", UMASK, 0o022, "masks the modes r--r--r-- (files) and r-xr-xr-x (dirs)",
           FILESYSTEM, (MOUNT,), minimum=0, maximum=0o777),
    Option("allow-other", FLAG, False, "let other users access the mount (needs "
           "user_allow_other in /etc/fuse.conf for non-root); permissions are then checked by "
           "the kernel", FILESYSTEM, (MOUNT,)),
    Option("version-at", TIMESTAMP, None, "show a versioned bucket as it was at TIME: an RFC "
           "3339 time (2026-11-27T16:45:54Z) or a duration back from now (2h, 30m, 1d); each key "
           "at its newest version not newer than TIME, keys deleted by then hidden",
           FILESYSTEM, (MOUNT,), default_text="off: the current version of each key"),
    Option("allow-offline", FLAG, False, "mount even when S3 cannot be reached, if the "
           "metadata index in the cache dir holds a listing of SOURCE (an earlier mount made "
           "one): the mount comes up offline, serving cached listings and chunks, and goes "
           "online when S3 answers; without it such a mount fails", FILESYSTEM, (MOUNT,)),
    # performance
    Option("parallel", COUNT, DEFAULT_PARALLEL, "most Range GETs in flight at once, all files; "
           "each holds a 256 KiB buffer, not a chunk (bytes go to the cache disk as they "
           "arrive); fewer while the server pushes back (503 SlowDown, 429)", PERFORMANCE,
           (MOUNT,), minimum=2),
    Option("memory-limit", SIZE, 56 * MiB, "memory for chunks held in RAM while the cache disk "
           "refuses writes (full or failing); must hold three chunks", PERFORMANCE, (MOUNT,)),
    Option("max-readahead", SIZE, 256 * MiB, "largest read-ahead window of a sequential reader, "
           "on the cache disk (not in RAM); all readers together hold at most a quarter of "
           "--cache-size ahead", PERFORMANCE, (MOUNT,)),
    Option("kernel-readahead", SIZE, 1 * MiB, "the kernel's read-ahead for this mount, which "
           "sets the FUSE request size; 0 leaves the kernel's own setting; needs root", PERFORMANCE,
           (MOUNT,), field="kernel_readahead_kb", to_field=lambda size: size // KiB,
           check=_whole_kib),
    # process
    Option("foreground", FLAG, False, "stay in the foreground and log to stderr (for systemd "
           "and debugging)", PROCESS, (MOUNT,), short="-f"),
    Option("log-level", choice("debug", "info", "warning", "error"), "info",
           "debug shows each GET", PROCESS, (MOUNT,)),
    Option("log-file", PATH, None, "log here", PROCESS, (MOUNT,),
           default_text="stderr in the foreground, syslog in the background"),
    Option("pid-file", PATH, None, "write the daemon's PID here", PROCESS, (MOUNT,)),
    Option("mount-timeout", SECONDS, 60.0, "how long to wait for the mount to come up", PROCESS,
           (MOUNT,), minimum=0.0),
    Option("metrics-addr", TEXT, None, "serve Prometheus metrics at http://HOST:PORT/metrics",
           PROCESS, (MOUNT,), default_text="off", metavar="HOST:PORT", check=_host_port),
    Option("ready-fd", COUNT, None, "the pipe the daemon reports readiness on", PROCESS,
           (MOUNT,), field=None, hidden=True),
    # prefetch
    Option("jobs", COUNT, DEFAULT_JOBS, "chunks fetched in parallel", PREFETCH_GROUP,
           (PREFETCH, PIN), field=None, minimum=1, short="-j"),
    Option("no-progress", FLAG, False, "no progress bar", PREFETCH_GROUP, (PREFETCH, PIN),
           field=None),
)  # fmt: skip

RULES = (
    Rule(("cache_size", "chunk_size"), lambda cache, chunk: cache >= chunk,
         "--cache-size must hold at least one chunk"),
    Rule(("pin_limit", "cache_size"), lambda pin, cache: pin is None or pin <= cache,
         "--pin-limit must not be larger than --cache-size"),
    Rule(("shared_cache", "allow_other"), lambda shared, other: other or not shared,
         "--shared-cache is for a mount that other users read (--allow-other)"),
    Rule(("memory_limit", "chunk_size"), lambda memory, chunk: memory >= 3 * chunk,
         "--memory-limit must hold at least three chunks"),
)  # fmt: skip

BY_NAME = {option.dest: option for option in OPTIONS}


def options_of(command: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if command in option.commands)


# --- argparse ------------------------------------------------------------------------------


def help_text(option: Option) -> str:
    default = option.shown_default(resolved=True)
    text = option.help if default is None else f"{option.help} (default: {default})"
    return text.replace("%", "%%")  # argparse %-formats help


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's options, in help sections by group. Values stay text (flags: True or
    None) until :func:`values` reads them, so a default is never mistaken for a choice."""
    groups: dict[str, Any] = {}
    for option in options_of(command):
        if option.group not in groups:
            note = GROUP_NOTES.get(option.group)
            groups[option.group] = parser.add_argument_group(
                f"{option.group} ({note})" if note else option.group
            )
        names = ([option.short] if option.short else []) + [f"--{option.name}"]
        extra: dict[str, Any] = (
            {"action": "store_const", "const": True} if option.is_flag
            else {"metavar": option.shown_metavar}
        )  # fmt: skip
        groups[option.group].add_argument(
            *names,
            dest=option.dest,
            default=None,
            help=argparse.SUPPRESS if option.hidden else help_text(option),
            **extra,
        )


def values(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Each of the command's options -> its checked value, or its default when not given."""
    out: dict[str, Any] = {}
    for option in options_of(command):
        given = getattr(args, option.dest, None)
        if given is None:
            out[option.dest] = option.default_value()
        elif option.is_flag:
            out[option.dest] = bool(given)
        else:
            out[option.dest] = option.parse(given)
    for rule in RULES:
        applies = all(name in out for name in rule.names)
        if applies and not rule.holds(*(out[name] for name in rule.names)):
            got = " and ".join(
                f"--{BY_NAME[name].name} {BY_NAME[name].kind.show(out[name])}"
                for name in rule.names
            )
            raise UsageError(f"{rule.message}, got {got}")
    return out


def defaults(command: str) -> dict[str, Any]:
    """What :func:`values` gives when no option is given."""
    return {option.dest: option.default_value() for option in options_of(command)}


def make_config(source: str, mountpoint: Path, given: dict[str, Any]) -> Config:
    """The mount's Config from :func:`values` of ``mount``."""
    bucket, prefix = parse_source(source)
    filled = {
        option.target: option.to_field(given[option.dest])
        for option in options_of(MOUNT)
        if option.target is not None
    }
    return Config(bucket=bucket, prefix=prefix, mountpoint=mountpoint.absolute(), **filled)


def make_s3_settings(given: dict[str, Any]) -> S3Settings:
    """The S3Settings from :func:`values` of a command that takes the S3 options."""
    wanted = {f.name for f in fields(S3Settings)}
    return S3Settings(
        **{
            option.target: option.to_field(given[option.dest])
            for option in OPTIONS
            if option.target in wanted
        }
    )


# --- the fstab form ------------------------------------------------------------------------

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
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def expand_fstab_options(argv: list[str]) -> list[str]:
    """Turns ``-o a=b,flag`` into ``--a=b --flag`` so both forms are read alike."""
    known = {option.dest: option for option in options_of(MOUNT) if not option.hidden}
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":
            out += [arg, *it]
            break
        if arg != "-o" and not (arg.startswith("-o") and not arg.startswith("--")):
            out.append(arg)
            continue
        value = next(it, None) if arg == "-o" else arg[2:]
        if value is None:
            raise UsageError("-o needs a value (see 'rangefs mount --help')")
        for item in filter(None, value.split(",")):
            name, has_value, val = item.partition("=")
            norm = name.strip().replace("-", "_")
            if norm in IGNORED_OPTIONS or item.startswith(IGNORED_OPTION_PREFIXES):
                continue
            option = known.get(norm)
            if option is None:
                raise UsageError(f"unknown option: {name!r} (see 'rangefs mount --help')")
            if option.is_flag:
                if has_value and val.lower() not in TRUE_WORDS:
                    if val.lower() in FALSE_WORDS:
                        continue
                    raise UsageError(f"option {name!r} takes no value")
                out.append(f"--{option.name}")
            elif not has_value:
                raise UsageError(f"option {name!r} needs a value: {name}=...")
            else:
                out.append(f"--{option.name}={val}")
    return out


# --- the reference in docs/CONFIGURATION.md ------------------------------------------------

REFERENCE_BEGIN = "<!-- options reference: generated by scripts/update-option-docs from " \
    "rangefs/options.py; do not edit -->"  # fmt: skip
REFERENCE_END = "<!-- end of options reference -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _command_line(option: Option) -> str:
    names = ", ".join(f"`{n}`" for n in ([option.short] if option.short else []))
    long = f"--{option.name}" + ("" if option.is_flag else f" {option.shown_metavar}")
    return f"{names}, `{long}`" if names else f"`{long}`"


def _accepts(option: Option) -> str:
    limits = option.limits()
    if limits is None and option.kind.metavar.startswith("{"):
        return option.kind.metavar[1:-1].replace(",", ", ")
    return limits or ""


def reference_markdown(commands: Iterable[str] = (MOUNT, PREFETCH, PIN, CACHE)) -> str:
    """One table per group: every option that is not plumbing, as the docs list it."""
    commands = tuple(commands)
    lines: list[str] = []
    groups: list[str] = []
    for option in OPTIONS:
        if option.group not in groups:
            groups.append(option.group)
    for group in groups:
        rows = [o for o in OPTIONS if o.group == group and not o.hidden]
        rows = [o for o in rows if set(o.commands) & set(commands)]
        if not rows:
            continue
        lines += [f"### {group}", "", "| command line | fstab form | default | accepts | "
                  "commands | what it does |", "|---|---|---|---|---|---|"]  # fmt: skip
        for o in rows:
            fstab = ""
            if MOUNT in o.commands:
                fstab = f"`{o.dest}`" if o.is_flag else f"`{o.dest}={o.shown_metavar}`"
            default = o.shown_default() or ""
            if default and o.default_text is None:
                default = f"`{default}`"  # a value, as typed
            cells = (_command_line(o), fstab, default, _accepts(o), ", ".join(o.commands), o.help)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def with_reference(doc: str) -> str:
    """``doc`` with the text between the reference markers regenerated."""
    pattern = re.compile(re.escape(REFERENCE_BEGIN) + ".*?" + re.escape(REFERENCE_END), re.S)
    if not pattern.search(doc):
        raise ValueError("the options reference markers are missing")
    block = f"{REFERENCE_BEGIN}\n\n{reference_markdown()}\n{REFERENCE_END}"
    return pattern.sub(lambda _m: block, doc)
