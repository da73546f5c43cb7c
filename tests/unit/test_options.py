"""The option table: both spellings, the defaults help shows, one-line errors, the docs."""

import re
from pathlib import Path

import pytest

from rangefs import cli, options
from rangefs.config import Config, S3Settings
from rangefs.options import FLAG, OPTIONS, Option
from tests.support import REPO_ROOT

DOC = REPO_ROOT / "docs" / "CONFIGURATION.md"
KEY_FILE = Path(__file__).resolve().parent / "sse-c-sample.key"  # a test key, in base64

# A value other than the default for every option a user can give (None: a flag).
SAMPLES = {
    "endpoint_url": "http://h:9000", "region": "eu-west-1", "profile": "other",
    "addressing_style": "virtual", "connect_timeout": "2.5", "read_timeout": "7",
    "retries": "3", "retry_seconds": "9", "cache_dir": "/var/cache/x", "cache_size": "20G",
    "chunk_size": "16M", "metadata_ttl": "0", "uid": "4321", "gid": "1234", "umask": "027",
    "allow_other": None, "parallel": "3", "memory_limit": "128M", "max_readahead": "1.5G",
    "kernel_readahead": "512K", "foreground": None, "log_level": "debug",
    "log_file": "/var/log/r.log", "pid_file": "/run/r.pid", "mount_timeout": "5",
    "metrics_addr": "127.0.0.1:9100", "jobs": "3", "no_progress": None, "shared_cache": None,
    "negative_metadata_ttl": "5",
    "requester_pays": None, "sse_c_key_file": str(KEY_FILE),
    "version_at": "2026-11-27T16:45:54Z", "proofs": "etag", "allow_offline": None,
    "pin_limit": "3G",
}  # fmt: skip
# Options that only make sense with another one (a Rule): given together in the samples.
COMPANIONS = {"shared_cache": ("--allow-other",)}

# Text each kind cannot read, and for bounded options a value out of bounds.
UNREADABLE = {
    "SIZE": "lots",
    "SECONDS": "soon",
    "N": "x",
    "OCTAL": "9",
    "FILE": "/nonexistent",
    "TIME": "yesterday",
}
OUT_OF_BOUNDS = {
    "connect_timeout": "0", "read_timeout": "0", "retries": "0", "retry_seconds": "-1",
    "chunk_size": "1K", "metadata_ttl": "-1", "uid": "-1", "gid": "-1", "umask": "1000",
    "parallel": "0", "mount_timeout": "-1", "jobs": "0",
}  # fmt: skip


def user_options(command: str) -> list[Option]:
    return [o for o in options.options_of(command) if not o.hidden]


def mount_config(*argv: str) -> Config:
    parser = cli.build_parser()
    args = parser.parse_args(cli.expand_fstab_options(["mount", *argv, "bucket", "/mnt/x"]))
    return cli.config_from_args(args)


def test_every_option_has_a_sample():
    assert set(SAMPLES) == {o.dest for o in OPTIONS if not o.hidden}


@pytest.mark.parametrize("option", user_options("mount"), ids=lambda o: o.name)
def test_long_and_fstab_forms_give_the_same_config(option):
    value = SAMPLES[option.dest]
    if value is None:
        long, fstab, fstab_dashes = [f"--{option.name}"], option.dest, option.name
    else:
        long = [f"--{option.name}", value]
        fstab, fstab_dashes = f"{option.dest}={value}", f"{option.name}={value}"
    companions = COMPANIONS.get(option.dest, ())
    config = mount_config(*long, *companions)
    assert mount_config("-o", fstab, *companions) == config
    assert mount_config("-o", f"rw,{fstab_dashes},_netdev", *companions) == config
    default = mount_config(*companions)
    assert getattr(config, option.target) != getattr(default, option.target)


def test_shared_cache_needs_allow_other(capsys):
    assert cli.main(["mount", "--shared-cache", "b", "/tmp"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "rangefs: --shared-cache is for a mount that other users read (--allow-other), "
        "got --shared-cache on and --allow-other off\n"
    )


def test_fstab_flag_words():
    assert mount_config("-o", "allow_other=yes").allow_other
    assert not mount_config("-o", "allow_other=off").allow_other


def test_config_from_defaults_matches_the_table():
    config = mount_config()
    for option in user_options("mount"):
        if option.target and not callable(option.default):
            assert getattr(config, option.target) == option.to_field(option.default)
    assert config.kernel_readahead_kb * 1024 == options.BY_NAME["kernel_readahead"].default


def test_prefetch_s3_settings_match_the_mount():
    s3_args = ["--endpoint-url", "http://h:1", "--retries", "2", "--addressing-style", "auto"]
    parser = cli.build_parser()
    args = parser.parse_args(["prefetch", *s3_args, "-j", "5", "s3://bucket/k"])
    given = options.values(args, options.PREFETCH)
    assert given["jobs"] == 5 and given["no_progress"] is False
    assert options.make_s3_settings(given) == mount_config(*s3_args).s3
    assert isinstance(mount_config().s3, S3Settings)


def test_shown_defaults_read_back_as_the_default():
    for option in OPTIONS:
        if option.default is not None and not callable(option.default) and not option.is_flag:
            assert option.parse(option.kind.show(option.default)) == option.default


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", [options.MOUNT, options.PREFETCH, options.CACHE])
def test_help_shows_the_table_defaults(command, capsys):
    text = help_of(command, capsys)
    for option in options.options_of(command):
        if option.hidden:
            assert f"--{option.name}" not in text
            continue
        assert f"--{option.name}" in text
        shown = option.shown_default(resolved=True)
        if shown is not None:
            assert " ".join(f"(default: {shown})".split()) in text, option.name
    assert text.count("default:") == sum(
        1 for o in options.options_of(command) if not o.hidden and o.shown_default() is not None
    )


def test_help_texts_restate_no_default():
    for option in OPTIONS:
        assert "default" not in option.help.lower(), option.name


def test_sizes_show_with_units(capsys):
    text = help_of("mount", capsys)
    assert "(default: 10G)" in text and "(default: 8M)" in text
    assert "10737418240" not in text


def bad_cases():
    for option in OPTIONS:
        if option.hidden or option.is_flag:
            continue
        command = options.MOUNT if options.MOUNT in option.commands else option.commands[0]
        bad = []
        if option.kind.metavar in UNREADABLE:
            bad.append(UNREADABLE[option.kind.metavar])
        if option.kind.metavar.startswith("{"):
            bad.append("nope")
        if option.dest in OUT_OF_BOUNDS:
            bad.append(OUT_OF_BOUNDS[option.dest])
        if option.check:
            bad.append("nowhere")
        for value in bad:
            yield pytest.param(command, option, value, id=f"{option.name}={value}")


@pytest.mark.parametrize(("command", "option", "value"), bad_cases())
def test_invalid_values_are_one_line_usage_errors(command, option, value, capsys, tmp_path):
    rest = ["bucket", str(tmp_path / "missing")] if command == options.MOUNT else ["s3://bucket/k"]
    spellings = [[f"--{option.name}", value]]
    if command == options.MOUNT:
        spellings.append(["-o", f"{option.dest}={value}"])
    for spelling in spellings:
        assert cli.main([command, *spelling, *rest]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rangefs: --{option.name}") and err.count("\n") == 1, err


def test_every_kind_of_value_has_an_invalid_case():
    covered = {c.values[1].name for c in bad_cases()}
    for option in OPTIONS:
        readable_by_anything = option.kind.metavar in ("TEXT", "PATH", "")
        if not option.hidden and not readable_by_anything:
            assert option.name in covered


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--cache-size", "4M"], "--cache-size must hold at least one chunk"),
     (["--chunk-size", "32M"], "--memory-limit must hold at least three chunks")],
)  # fmt: skip
def test_rules_between_options(argv, message, capsys, tmp_path):
    assert cli.main(["mount", *argv, "bucket", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rangefs: {message}") and err.count("\n") == 1


def test_ready_fd_is_plumbing_only():
    with pytest.raises(cli.UsageError, match="unknown option: 'ready_fd'"):
        cli.expand_fstab_options(["mount", "b", "/m", "-o", "ready_fd=3"])
    parser = cli.build_parser()
    args = parser.parse_args(["mount", "--ready-fd", "7", "b", "/m"])
    assert options.values(args, options.MOUNT)["ready_fd"] == 7


def test_docs_reference_is_generated_from_the_table():
    text = DOC.read_text()
    assert options.with_reference(text) == text, "run scripts/update-option-docs"


def test_docs_list_every_option_with_its_default():
    text = DOC.read_text()
    for option in OPTIONS:
        if option.hidden:
            assert f"--{option.name}" not in text
            continue
        rows = [line for line in text.splitlines() if f"`--{option.name}" in line]
        shown = option.shown_default()
        assert any(shown is None or shown in row for row in rows), option.name


def test_docs_prose_restates_no_default():
    """Outside the generated reference, no "(default ...)" next to an option."""
    text = DOC.read_text()
    prose = text[: text.index(options.REFERENCE_BEGIN)]
    assert not re.search(r"\(default[ :]", prose)


def test_flag_kind_takes_no_value():
    assert all(o.default is False for o in OPTIONS if o.kind is FLAG)
