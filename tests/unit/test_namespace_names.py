"""Which keys can be POSIX names."""

import pytest

from rangefs.fs.namespace import join, split, valid_name


@pytest.mark.parametrize("name", ["a", "file.bin", "ü nicode name", "x" * 255, "é" * 127])
def test_valid(name):
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 256, "é" * 128, "a\0b"])
def test_invalid(name):
    assert not valid_name(name)


def test_join_split_roundtrip():
    assert join("", "a") == "a"
    assert join("a/b", "c") == "a/b/c"
    assert split("a/b/c") == ("a/b", "c")
    assert split("a") == ("", "a")
