"""``rangefs pin``/``unpin`` away from a mount: one line, exit 1, nothing written."""

from rangefs import cli


def test_pin_and_unpin_refuse_paths_not_on_a_mount(tmp_path, capsys):
    (tmp_path / "f").write_bytes(b"x")
    for command in ("pin", "unpin"):
        assert cli.main([command, str(tmp_path / "f")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a file on a rangefs mount" in err, err
    assert cli.main(["pin", str(tmp_path / "missing")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["pin", "--no-progress", str(tmp_path / "empty")]) == 1
    assert "no files in" in capsys.readouterr().err
    assert cli.main(["status", str(tmp_path)]) == 1
    assert "not a file on a rangefs mount" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f"]
