"""Option parsing: sizes, sources, the fstab ``-o`` form and the one-line errors."""

import pytest

from rangefs import cli
from rangefs.config import GiB, KiB, MiB, parse_size, parse_source
from rangefs.errors import UserError


@pytest.mark.parametrize(
    ("text", "value"),
    [("8M", 8 * MiB), ("512k", 512 * KiB), ("20G", 20 * GiB), ("1.5G", int(1.5 * GiB)),
     ("4096", 4096), ("8MiB", 8 * MiB), ("1 g", GiB)],
)  # fmt: skip
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "8X", "1e9", "8 MBs"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("source", "bucket", "prefix"),
    [("bucket", "bucket", ""), ("bucket/a/b", "bucket", "a/b/"), ("s3://bucket", "bucket", ""),
     ("s3://bucket/a/", "bucket", "a/"), ("my.bucket-1/x", "my.bucket-1", "x/")],
)  # fmt: skip
def test_parse_source(source, bucket, prefix):
    assert parse_source(source) == (bucket, prefix)


@pytest.mark.parametrize("source", ["", "s3://", "-bucket", "b", "bucket/../x", "bucket/a//b"])
def test_parse_source_rejects(source):
    with pytest.raises(UserError):
        parse_source(source)


def expand(*argv):
    return cli.expand_fstab_options(list(argv))


def test_fstab_options_become_long_options():
    out = expand("mount", "b", "/m", "-o", "endpoint-url=http://h:1,chunk_size=1M,allow_other")
    assert out == ["mount", "b", "/m", "--endpoint-url=http://h:1", "--chunk-size=1M",
                   "--allow-other"]  # fmt: skip


def test_fstab_noise_is_ignored():
    out = expand("mount", "b", "/m", "-o", "rw,_netdev,nofail,x-systemd.automount,noauto,dev,suid")
    assert out == ["mount", "b", "/m"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [("bogus=1", "unknown option: 'bogus'"), ("chunk_size", "needs a value"),
     ("allow_other=maybe", "takes no value")],
)  # fmt: skip
def test_fstab_bad_options(opts, message):
    with pytest.raises(UserError, match=message) as info:
        expand("mount", "b", "/m", "-o", opts)
    assert cli.exit_status(info.value) == 2


def test_bad_values_are_one_line_usage_errors(capsys):
    assert cli.main(["mount", "--chunk-size", "lots", "b", "/tmp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rangefs: ") and err.count("\n") == 1
    assert "not a size" in err


def test_chunk_size_bounds(capsys):
    assert cli.main(["mount", "--chunk-size", "1K", "bucket", "/tmp"]) == 2
    assert "--chunk-size must be between" in capsys.readouterr().err


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["mount", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--endpoint-url", "--region", "--profile", "--cache-dir", "--cache-size",
                   "--chunk-size", "--metadata-ttl", "--uid", "--gid", "--allow-other",
                   "--log-level", "--foreground"):  # fmt: skip
        assert option in text
    assert "default: 8M" in text and "default: 10G" in text and "default: 60.0" in text


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "mount" in capsys.readouterr().out


def test_mount_fuse_form_means_mount():
    assert cli.normalise_argv(["bucket", "/mnt", "-o", "ro"]) == ["mount", "bucket", "/mnt", "-o",
                                                                 "ro"]  # fmt: skip
