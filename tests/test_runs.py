"""Run folders: their contents, and a failed or killed write that leaves no complete folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svd_core import load_run, save_run
from svd_core.runs import delete_run, list_runs


def test_run_folder_contents(tiny_sampler, base, input_png, tmp_path):
    result = tiny_sampler.generate(input_png, base)
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4", "gif", "zip"))
    names = {p.name for p in path.iterdir()}
    assert names == {"video.mp4", "video.gif", "frames.zip", "input.png", "poster.png", "run.json"}
    rec = json.loads((path / "run.json").read_text())
    assert rec["params"] == base.to_dict() and rec["seed"] == base.seed
    assert rec["checkpoint"]["variant"] == "tiny" and len(rec["checkpoint"]["sha256"]) == 64
    assert {"torch", "diffusers"} <= set(rec["versions"]) and rec["device"] == "cpu"
    assert set(rec["timings_s"]) == {"image_encode", "denoise", "decode", "total", "measure"}
    runs = list_runs(tmp_path)
    assert [r.id for r in runs] == [path.name] and runs[0].params == base
    delete_run(path, tmp_path)
    assert list_runs(tmp_path) == []


@pytest.mark.slow
def test_failed_write_leaves_nothing(tiny_sampler, base, input_png, tmp_path, monkeypatch):
    result = tiny_sampler.generate(input_png, base)
    real_replace, seen = os.replace, []

    def full_disk(src, dst):  # fails after every file is in the temporary folder
        seen.append(sorted(p.name for p in Path(src).iterdir()))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        save_run(result, tiny_sampler.info, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert "run.json" in seen[0]  # the temporary folder existed, complete, when the write failed
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from svd_core.runs import commit_staged, stage_folder
class Dying(dict):
    def items(self):
        yield "video.mp4", b"x" * 1000
        os.kill(os.getpid(), signal.SIGKILL)
folder = Path(sys.argv[1]) / "run-1"
commit_staged([(stage_folder(folder, Dying(a=1)), folder)])
"""


def test_killed_run_leaves_no_complete_folder(tmp_path):
    from svd_core.runs import clean_stale_temp

    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    assert r.returncode != 0
    assert list_runs(tmp_path) == []
    assert not (tmp_path / "run-1").exists()
    leftover = next(tmp_path.iterdir())
    with pytest.raises(ValueError):
        load_run(leftover)
    live = tmp_path / f".tmp-{os.getpid()}-writing"  # a live process's folder stays
    live.mkdir()
    old = tmp_path / ".tmp-legacy-name"  # no pid, a day old: removed
    old.mkdir()
    os.utime(old, (0, 0))
    assert set(clean_stale_temp(tmp_path)) == {leftover, old}
    assert list(tmp_path.iterdir()) == [live]


def test_video_io_does_not_import_the_run_folders():
    """video.py writes the record it is given (record.finite) and reads tags; runs.py uses video.py, not the other
    way round. The mp4's record is read beside run.json (runs.read_video_record); image_sha256 is in images."""
    import ast

    import svd_core

    package = Path(svd_core.__file__).parent
    tree = ast.parse((package / "video.py").read_text())
    assert not [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "runs"]
    assert not (package / "provenance.py").exists()
    from svd_core.images import image_sha256  # noqa: F401
    from svd_core.runs import read_video_record

    assert svd_core.read_video_record is read_video_record
