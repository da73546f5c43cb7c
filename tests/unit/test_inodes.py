"""The inode table: numbers stay with their path while the kernel holds them, and a number
the kernel forgot (or never took) is freed and given out again."""

import pytest

from rangefs.errors import NotFound
from rangefs.fs.inodes import ROOT_INODE, InodeTable


def test_a_number_lives_while_the_kernel_holds_it_and_is_reused_after():
    table = InodeTable()
    a = table.take("a")
    assert table.take("a") == a and table.ino_for("a") == a and table.path_of(a) == "a"
    table.forget(a, 1)
    assert table.path_of(a) == "a"
    table.opened(a)
    table.forget(a, 1)
    assert table.path_of(a) == "a", "an open file keeps its number"
    table.closed(a)
    with pytest.raises(NotFound):
        table.path_of(a)
    b = table.ino_for("b")
    assert b == a and table.path_of(b) == "b" and table.ino_for("a") != a
    assert len(table) == 3


def test_a_number_given_back_is_dropped_and_the_root_never():
    table = InodeTable()
    x = table.take("x")
    table.forget(x, 1)  # readdir gives back the name the kernel's buffer refused
    assert len(table) == 1
    assert table.take("y") == x, "a freed number is given out again"
    table.forget(ROOT_INODE, 5)
    assert table.path_of(ROOT_INODE) == ""
    for bad in (0, -1, 10**6):
        with pytest.raises(NotFound):
            table.path_of(bad)
        table.forget(bad, 1)  # a stray forget is harmless
