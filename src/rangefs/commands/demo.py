"""``rangefs demo``: the embedded default job, end to end on one machine.

Starts SeaweedFS on 127.0.0.1, seeds a bucket with sample objects (one of several hundred
MiB), mounts it with the real ``rangefs mount``, copies the big object off the mount with
``cp``, remounts and copies again (served by the cache, no GET), and leaves the mount up
with instructions to take it down.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rangefs.commands import locals3
from rangefs.commands.prefetch import wait_until_cached
from rangefs.config import MiB, format_size
from rangefs.errors import UserError
from rangefs.fs import xattrs
from rangefs.options import MOUNT, defaults, make_s3_settings
from rangefs.remote.s3 import make_client

DEMO_DIR = Path(os.environ.get("RANGEFS_DEMO_DIR", "/tmp/rangefs-demo"))
BUCKET = "demo"
PROBE_BUCKET = "rangefs-demo-probe"
BIG_KEY = "media/big-video.bin"
BIG_SIZE = int(os.environ.get("RANGEFS_DEMO_SIZE_MIB", "384")) * MiB
SMALL = {
    "README.txt": b"Sample bucket mounted by rangefs.\n",
    "docs/notes with spaces.txt": b"unicode \xc3\xa9 and spaces work\n",
    "photos/2026/cat.jpg": bytes(range(256)) * 1000,
}


def say(label: str, text: str) -> None:
    print(f"  {label:<14}{text}", flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise UserError(f"demo: {' '.join(cmd)} failed: {proc.stderr.strip()}")


def stop_previous(mnt: Path) -> None:
    """A second demo run replaces the first: unmount it and stop its server."""
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=30)
    pid_file = DEMO_DIR / "server.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        pid_file.unlink()


def seed(client: Any) -> str:
    client.create_bucket(Bucket=BUCKET)
    for key, body in SMALL.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    digest = hashlib.sha256()
    big = DEMO_DIR / "upload.tmp"
    with big.open("wb") as f:
        for _ in range(BIG_SIZE // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    client.upload_file(str(big), BUCKET, BIG_KEY)
    big.unlink()
    return digest.hexdigest()


def timed_copy(src: Path, dst: Path) -> float:
    started = time.monotonic()
    run(["cp", str(src), str(dst)])
    return time.monotonic() - started


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def start_server() -> tuple[locals3.LocalS3, Any]:
    """SeaweedFS that outlives the demo (own session), and an admin client for it."""
    server = locals3.start_seaweedfs(DEMO_DIR / "s3", detach=True)
    (DEMO_DIR / "server.pid").write_text(str(server.process.pid))
    os.environ.update(server.env())
    given = {**defaults(MOUNT), "endpoint_url": server.endpoint_url, "region": server.region}
    client = make_client(make_s3_settings(given), pool=16)

    def probe() -> None:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=PROBE_BUCKET)
        client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
        client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read()

    try:
        locals3.wait_ready(server, probe, timeout=90, poll=0.25)
    except RuntimeError:
        server.stop()
        raise
    return server, client


def run_demo() -> int:
    mnt, cache, copy = DEMO_DIR / "mnt", DEMO_DIR / "cache", DEMO_DIR / "copy.bin"
    locals3.weed_binary()  # before anything: without SeaweedFS, say what to install
    print("rangefs demo: a local S3 server, a mount, a copy, a remount", flush=True)
    stop_previous(mnt)
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    mnt.mkdir(parents=True)
    server, client = start_server()
    say("S3 server", f"SeaweedFS at {server.endpoint_url} (pid {server.process.pid})")
    expected = seed(client)
    say("bucket", f"s3://{BUCKET}: {len(SMALL) + 1} objects, {BIG_KEY} is {format_size(BIG_SIZE)}")
    env = dict(os.environ)
    mount_cmd = [sys.executable, "-m", "rangefs", "mount", "--endpoint-url", server.endpoint_url,
                 "--cache-dir", str(cache), "--log-file", str(DEMO_DIR / "rangefs.log"),
                 BUCKET, str(mnt)]  # fmt: skip
    run(mount_cmd, env)
    say("mounted", f"s3://{BUCKET}/ on {mnt} (cache {cache})")
    listing = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file())
    say("files", ", ".join(listing))

    seconds = timed_copy(mnt / BIG_KEY, copy)
    wait_until_cached(mnt / BIG_KEY)
    stats = xattrs.read_stats(mnt)
    ok = "sha256 matches" if sha256_of(copy) == expected else "SHA256 MISMATCH"
    say("cold cp", f"{format_size(BIG_SIZE)} in {seconds:.2f}s "
        f"({BIG_SIZE / seconds / 1e6:.0f} MB/s): {stats['gets']} Range GETs, "
        f"{format_size(stats['bytes_fetched'])} fetched, {stats['chunks_stored']} chunks "
        f"cached; {ok}")  # fmt: skip
    copy.unlink()

    run(["fusermount3", "-u", str(mnt)])
    for _ in range(100):
        if not os.path.ismount(mnt):
            break
        time.sleep(0.05)
    run(mount_cmd, env)
    seconds = timed_copy(mnt / BIG_KEY, Path("/dev/null"))
    stats = xattrs.read_stats(mnt)
    say(
        "remount + cp",
        f"{format_size(BIG_SIZE)} in {seconds:.2f}s: {stats['gets']} Range GETs, "
        f"all from the disk cache, the resume checkpoint ({stats['range_hits']} reads)",
    )
    print(flush=True)
    say("mount", f"{mnt} is still mounted; try: ls -la {mnt}; getfattr -d {mnt}/{BIG_KEY}")
    say("unmount", f"umount {mnt}   (or fusermount3 -u {mnt})")
    say("stop server", f"kill {server.process.pid}   (data in {DEMO_DIR / 's3'})")
    return 0 if ok == "sha256 matches" else 1
