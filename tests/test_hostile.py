"""Files from strangers: hostile images, malformed checkpoints and records, kills. Each is refused in one line
(or shown as unusable) and nothing else is lost; a valid file is never refused."""

import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from svd_core import CheckpointError, ImageError, inspect_checkpoint, prepare_image
from svd_core.checkpoints import file_sha256, read_safetensors_header, scan_checkpoints
from svd_core.images import ImageSpec

SPEC = ImageSpec(64, 32)
# An EPS whose PostScript never ends: Pillow would hand it to Ghostscript (`gs`), which would spin forever.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\n"


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "svd_core", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# ------------------------------------------------------------------------------------------- hostile images

@pytest.fixture
def no_external_programs(monkeypatch):
    """Every subprocess start and every consultation of Pillow's EPS decoder is recorded and refused."""
    from PIL import EpsImagePlugin

    calls = []

    def refuse(what):
        def call(*args, **kwargs):
            calls.append((what, args[:1]))
            raise AssertionError(f"{what} was reached")
        return call
    monkeypatch.setattr(subprocess, "Popen", refuse("subprocess.Popen"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", refuse("EpsImagePlugin"))
    return calls


@pytest.mark.parametrize("as_path", [True, False])
def test_eps_named_png_never_reaches_a_decoder_or_program(tmp_path, no_external_programs, as_path):
    src = tmp_path / "x.png"
    src.write_bytes(EPS)
    with pytest.raises(ImageError, match="not a readable image") as e:
        prepare_image(src if as_path else EPS, 64, 64, spec=SPEC)
    assert no_external_programs == []
    assert "\n" not in str(e.value) and (not as_path or "x.png" in str(e.value))


def test_every_offered_format_still_opens(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 30), (200, 10, 10))
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"):
        path = tmp_path / f"x.{fmt.lower()}"
        img.save(path, fmt)
        assert prepare_image(path, 64, 64, spec=SPEC).image.getpixel((30, 30))[0] > 150, fmt


def test_cli_refuses_eps_in_one_line(tmp_path, tiny_checkpoint):
    src = tmp_path / "x.png"
    src.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n(/etc/hostname) (r) file\n")
    r = _cli("sample", str(src), "-c", str(tiny_checkpoint), "--out", str(tmp_path / "out"), timeout=120)
    assert r.returncode == 2 and "x.png is not a readable image" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------------- safetensors headers

def _raw_file(path: Path, header, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


MALFORMED = {
    "list": ([], b""),
    "int value": ({"x": 1}, b""),
    "no dtype": ({"t": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "string offsets": ({"t": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}, b"\0" * 4),
    "shape not a list": ({"t": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}, b"\0" * 4),
    "negative size": ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "unknown dtype": ({"t": {"dtype": "F7", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "size mismatch": ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
    "gap": ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
    "offsets past the end": ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 4),
    "metadata not strings": ({"__metadata__": {"a": 1}}, b""),
    "trailing bytes": ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_headers_are_refused_by_name(tmp_path, case):
    header, data = MALFORMED[case]
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=r"^bad.safetensors (has a malformed safetensors header|is truncated)") \
            as e:
        inspect_checkpoint(path)
    assert "\n" not in str(e.value)
    with pytest.raises(SafetensorError):  # safetensors itself refuses every one of them
        with safe_open(str(path), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    usable, problems = scan_checkpoints(tmp_path)
    assert usable == [] and [p.name for p, _ in problems] == ["bad.safetensors"]


def test_malformed_header_is_listed_not_crashing_cli(tmp_path, tiny_checkpoint):
    for name, (header, data) in list(MALFORMED.items())[:6]:
        _raw_file(tmp_path / f"{name.replace(' ', '_')}.safetensors", header, data)
    (tmp_path / "tiny.safetensors").symlink_to(tiny_checkpoint)
    r = _cli("list", str(tmp_path), "--no-hf-cache")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.count("unusable: ") == 6 and "tiny.safetensors" in r.stdout
    r = _cli("sample", "x.png", "-c", str(tmp_path / "list.safetensors"))
    assert r.returncode == 2 and "list.safetensors has a malformed safetensors header" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("measure", str(tmp_path), "-c", str(tmp_path / "no_dtype.safetensors"), "--image", "x.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def _header_length(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_valid_file_whose_header_length_starts_with_0x80_loads(tmp_path):
    """The first byte of a safetensors file is the header length's low byte: 0x80 for 1 header length in 32
    of those the library writes (it pads to 8), the same byte a pickle starts with."""
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    path = tmp_path / "w.safetensors"
    for pad in range(512):
        save_file(tensors, path, metadata={"note": "x" * pad})
        if _header_length(path) % 256 == 128:
            break
    assert path.read_bytes()[:1] == b"\x80"
    with safe_open(str(path), "pt") as f:  # a valid file
        assert f.get_tensor("a").sum() == 15
    header = read_safetensors_header(path)
    assert header["a"]["shape"] == [2, 3]


def test_pickles_and_zips_are_still_refused(tmp_path):
    legacy = tmp_path / "legacy.safetensors"
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)  # starts 0x80 0x02
    zipped = tmp_path / "zipped.safetensors"
    torch.save({"a": torch.zeros(2)}, zipped)  # PK\x03\x04
    for p in (legacy, zipped):
        with pytest.raises(CheckpointError, match="pickle/zip"):
            read_safetensors_header(p)


def test_fifo_is_listed_as_unusable_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=scan_checkpoints(tmp_path)), daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "pipe.safetensors", "wb"):
            pass
        pytest.fail("listing blocked on a FIFO")
    usable, problems = out["r"]
    assert usable == [] and "not a regular file" in problems[0][1]


# ----------------------------------------------------------------------------------------- sha256 cache

def test_sha256_cache_writes_nothing_beside_the_checkpoint(tmp_path, tiny_checkpoint, monkeypatch):
    models = tmp_path / "shared_models"
    models.mkdir()
    ck = models / "tiny.safetensors"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    os.chmod(models, 0o555)  # read-only (root ignores this: the listing below is what proves it)
    monkeypatch.setenv("SVD_STUDIO_CACHE", str(tmp_path / "cache"))
    try:
        import hashlib

        want = hashlib.sha256(ck.read_bytes()).hexdigest()
        assert file_sha256(ck) == want
        assert sorted(p.name for p in models.iterdir()) == ["tiny.safetensors"]
        from svd_core.checkpoints import cache_dir

        assert cache_dir() == tmp_path / "cache" and len(list((tmp_path / "cache" / "sha256").iterdir())) == 1
        # a new process reads it from the cache: a stored value is believed only for that path, size and mtime
        from svd_core import checkpoints

        checkpoints._SHA_CACHE.clear()
        entry = next((tmp_path / "cache" / "sha256").iterdir())
        entry.write_text(entry.read_text().replace(want, "0" * 64))
        assert file_sha256(ck) == "0" * 64  # served from the cache, not rehashed
        checkpoints._SHA_CACHE.clear()
        os.utime(ck, ns=(1, 1))  # the file changed: the entry no longer matches
        assert file_sha256(ck) == want
    finally:
        os.chmod(models, 0o755)
