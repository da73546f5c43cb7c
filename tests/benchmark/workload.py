"""The objects every peer reads, uploaded once per run to the local SeaweedFS."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmark.common import (
    BUCKET,
    CONC_READERS,
    MAIN_KEY,
    VIDEO_KEY,
    WAN_KEY,
    BenchError,
    MiB,
    conc_key,
    log,
    run,
)

MAIN_SEED = 1


@dataclass
class Workload:
    """Sizes come from the command line; ``sha`` and ``video_size`` are known after upload."""

    size: int
    conc_size: int
    wan_size: int
    video_seconds: int
    assets: Path
    sha: str = ""
    video_size: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Workload:
        return cls(
            size=args.size_mib * MiB,
            conc_size=args.conc_size_mib * MiB,
            wan_size=args.wan_size_mib * MiB,
            video_seconds=args.video_seconds,
            assets=Path(args.assets_dir),
        )

    def upload(self, client: Any) -> None:
        """A pattern object (hashed, so a copy can be verified), the concurrent readers'
        objects, the WAN object and the MP4."""
        from tests.support.patterns import upload_pattern

        log(f"uploading {MAIN_KEY} ({self.size // MiB} MiB)")
        self.sha = upload_pattern(client, BUCKET, MAIN_KEY, self.size, seed=MAIN_SEED)
        log(f"uploading {CONC_READERS} × {self.conc_size // MiB} MiB and {WAN_KEY}")
        for i in range(CONC_READERS):
            upload_unhashed(client, conc_key(i), self.conc_size, seed=100 + i)
        upload_unhashed(client, WAN_KEY, self.wan_size, seed=200)
        video = make_video(self.assets, self.video_seconds)
        client.upload_file(str(video), BUCKET, VIDEO_KEY)
        self.video_size = video.stat().st_size
        log(f"uploaded {VIDEO_KEY} ({self.video_size / MiB:.0f} MiB, {self.video_seconds} s)")


def upload_unhashed(client: Any, key: str, size: int, seed: int) -> None:
    """Like upload_pattern, without hashing the object afterwards."""
    from boto3.s3.transfer import TransferConfig

    from tests.support.patterns import MULTIPART_CHUNK, PatternFile

    config = TransferConfig(
        multipart_threshold=MULTIPART_CHUNK,
        multipart_chunksize=MULTIPART_CHUNK,
        max_concurrency=4,
    )
    with PatternFile(size, seed) as f:
        client.upload_fileobj(f, BUCKET, key, Config=config)


def make_video(assets: Path, seconds: int) -> Path:
    """An H.264/AAC MP4 without faststart (moov after mdat), cached between runs."""
    assets.mkdir(parents=True, exist_ok=True)
    path = assets / f"testsrc-720p-8M-{seconds}s.mp4"
    if not path.exists():
        log(f"encoding a {seconds} s test video with ffmpeg (cached in {assets})")
        tmp = path.with_suffix(".tmp.mp4")
        run(
            [
                "ffmpeg",
                "-nostdin",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=1280x720:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                str(seconds),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-b:v",
                "8M",
                "-minrate",
                "8M",
                "-maxrate",
                "8M",
                "-bufsize",
                "4M",
                "-x264-params",
                "nal-hrd=cbr",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                str(tmp),
            ],
            timeout=max(120, seconds * 3),
        )
        tmp.rename(path)
    moov, mdat = mp4_layout(path)
    if moov < mdat:
        raise BenchError(f"{path}: moov before mdat (faststart); delete it to regenerate")
    return path


def mp4_layout(path: Path) -> tuple[int, int]:
    """Offsets of the top-level moov and mdat boxes (-1 when absent)."""
    offsets: dict[bytes, int] = {}
    size = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(16)
            box = int.from_bytes(head[:4], "big")
            kind = head[4:8]
            if box == 1:
                box = int.from_bytes(head[8:16], "big")
            offsets.setdefault(kind, offset)
            if box < 8:
                break
            offset += box
    return offsets.get(b"moov", -1), offsets.get(b"mdat", -1)
