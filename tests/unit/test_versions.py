"""--version-at: reading the option's time, and picking each key's version as of that time."""

from datetime import UTC, datetime

import pytest

from rangefs import cli
from rangefs.config import format_timestamp, parse_duration, parse_timestamp
from rangefs.remote.store import ObjectInfo
from rangefs.remote.versions import VersionEntry, listing_as_of, pick_as_of

T = datetime(2026, 11, 27, 16, 45, 54, tzinfo=UTC).timestamp()
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-27T16:45:54Z", T),
        ("2026-11-27t16:45:54z", T),
        ("2026-11-27T17:45:54+01:00", T),
        ("2026-11-27T11:15:54-05:30", T),
        ("2026-11-27 16:45:54Z", T),
        ("2026-11-27T16:45:54.250Z", T + 0.25),
        (" 2026-11-27T16:45:54Z ", T),
    ],
)
def test_rfc3339_times_with_zone(text, expected):
    assert parse_timestamp(text, now=NOW) == expected


@pytest.mark.parametrize(
    "text, seconds",
    [("2h", 7200), ("30m", 1800), ("1d", 86400), ("1w", 604800), ("90s", 90), ("500ms", 0.5),
     ("1h30m", 5400), ("1.5h", 5400), ("0s", 0)],
)  # fmt: skip
def test_durations_count_back_from_now(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_timestamp(text, now=NOW) == NOW - seconds


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2h ago", "-2h", "2", "2x", "h", "2026-11-27T16:45:54",
             "2026-11-27", "2026-13-01T00:00:00Z", "1h 30m", "2026-11-27T16:45:54Q"],
)  # fmt: skip
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp(text, now=NOW)


def test_formatted_times_read_back():
    for when in (T, T + 0.25, NOW, 0.0):
        assert parse_timestamp(format_timestamp(when)) == pytest.approx(when, abs=1e-6)
    assert format_timestamp(T) == "2026-11-27T16:45:54Z"


@pytest.mark.parametrize("value", ["yesterday", "2026-11-27T16:45:54", "--version-at=-1h"])
def test_a_bad_time_is_a_one_line_usage_error_naming_the_option(value, capsys, tmp_path):
    option = [value] if value.startswith("--") else ["--version-at", value]
    assert cli.main(["mount", *option, "bucket", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rangefs: --version-at: ")
    assert err.count("\n") == 1


def test_the_daemon_gets_the_time_the_command_read():
    """A duration is read once: the daemon started later must not count back from its own now."""
    args = cli.build_parser().parse_args(["mount", "--version-at", "2h", "bkt", "/mnt/x"])
    config = cli.config_from_args(args)
    argv = ["mount", "--version-at", "2h", "bkt", "/mnt/x"]
    pinned = cli.pin_version_at(argv, config)
    again = cli.config_from_args(cli.build_parser().parse_args(pinned))
    assert again.version_at == pytest.approx(config.version_at, abs=1e-6)
    assert cli.pin_version_at(["mount", "bkt", "/mnt/x", "--", "-x"], config)[-1] == "-x"


# --- picking the version as of T ---------------------------------------------------------


def version(key, vid, mtime, *, latest=False, size=1, etag=None):
    return VersionEntry(key, vid, mtime, False, latest, size, etag or f'"{vid}"')


def marker(key, vid, mtime, *, latest=False):
    return VersionEntry(key, vid, mtime, deleted=True, is_latest=latest)


def info(entry):
    return ObjectInfo(entry.key, entry.size, entry.etag, entry.mtime, entry.version_id)


A3, A2, A1 = version("a", "a3", 30, latest=True), version("a", "a2", 20), version("a", "a1", 10)
B_DEL, B1 = marker("b", "bd", 25, latest=True), version("b", "b1", 15)
C1 = version("c", "c1", 40, latest=True)  # created after every T below but the last
PAGE = [A3, A2, A1, B_DEL, B1, C1]  # ListObjectVersions order: by key, newest first


@pytest.mark.parametrize(
    "at, expected",
    [
        (5, []),  # before everything
        (10, [A1]),  # a1 exactly at T counts; b1 not yet
        (15, [A1, B1]),
        (24.9, [A2, B1]),
        (25, [A2]),  # the delete marker at T hides b
        (35, [A3]),
        (40, [A3, C1]),
    ],
)
def test_newest_entry_not_after_t_wins_and_markers_hide(at, expected):
    assert pick_as_of(PAGE, at) == [info(e) for e in expected]


def test_the_order_of_the_input_does_not_matter_across_keys_or_pages():
    assert pick_as_of(list(reversed(PAGE)), 24.9) == pick_as_of(PAGE, 24.9)


def test_a_key_recreated_after_its_delete_marker_is_back():
    entries = [version("k", "k2", 30, latest=True), marker("k", "kd", 20), version("k", "k1", 10)]
    assert pick_as_of(entries, 25) == []
    assert pick_as_of(entries, 30) == [info(entries[0])]


def test_equal_timestamps():
    # Versions alone: listing order (newest first) decides.
    same = [version("k", "new", 10), version("k", "old", 10)]
    assert pick_as_of(same, 10)[0].version_id == "new"
    # A version and a delete marker in the same second: IsLatest decides, else the marker.
    assert pick_as_of([version("k", "v", 10, latest=True), marker("k", "d", 10)], 10)[0] == info(
        version("k", "v", 10, latest=True)
    )
    assert pick_as_of([version("k", "v", 10), marker("k", "d", 10, latest=True)], 10) == []
    assert pick_as_of([version("k", "v2", 20, latest=True), version("k", "v", 10),
                       marker("k", "d", 10)], 15) == []  # fmt: skip


def test_a_listing_as_of_t_keeps_the_marker_apart_and_every_common_prefix():
    entries = [version("d/", "m1", 5), version("d/x", "x1", 50, latest=True)]
    listing = listing_as_of("d/", entries, ["d/e/", "d/e/", "d/a/"], 20)
    assert listing.marker == info(entries[0])
    assert listing.objects == []  # d/x did not exist yet
    assert listing.prefixes == ["d/a/", "d/e/"]  # kept, even if empty as of T (documented)
