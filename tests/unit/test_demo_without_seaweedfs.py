"""`rangefs demo` on an install without SeaweedFS says what to install, in one line."""

import subprocess
import sys
from pathlib import Path


def test_demo_names_the_missing_extra(tmp_path):
    # A Python reached through a symlink in an empty directory: `weed` is neither on PATH
    # nor next to the interpreter, as on an install without the [demo] extra.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    python = bindir / "python3"
    python.symlink_to(Path(sys.executable).resolve())
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(src),
        "RANGEFS_DEMO_DIR": str(tmp_path / "demo"),
    }
    result = subprocess.run(
        [str(python), "-m", "rangefs", "demo"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr == (
        "rangefs: SeaweedFS ('weed') is not installed; install it with: "
        "pip install 'rangefs[demo]'\n"
    )
    assert not (tmp_path / "demo").exists()
