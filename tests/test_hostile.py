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

from svd_core.checkpoints import file_sha256, inspect_checkpoint, read_safetensors_header, scan_checkpoints
from svd_core.errors import CheckpointError, ImageError, RecordError
from svd_core.images import ImageSpec, prepare_image

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test

SPEC = ImageSpec(64, 32)
# An EPS whose PostScript never ends: Pillow would hand it to Ghostscript (`gs`), which would spin forever.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\n"


def _cli(*args):
    """`python -m svd_core ARGS` in this process (its one-line errors and exit code; an uncaught exception fails
    the test as the traceback would)."""
    import contextlib
    import io

    from svd_core.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


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
    r = _cli("sample", str(src), "-c", str(tiny_checkpoint), "--out", str(tmp_path / "out"))
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


_T = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
EDGE_HEADERS = {  # name -> (raw header, data): our verdict must be safetensors' own
    "metadata null": (json.dumps({"__metadata__": None, "t": _T}).encode(), b"\0" * 4),
    "metadata empty list": (json.dumps({"__metadata__": [], "t": _T}).encode(), b"\0" * 4),
    "utf-8 bom": (b"\xef\xbb\xbf" + json.dumps({"t": _T}).encode(), b"\0" * 4),
    "utf-16": (json.dumps({"t": _T}).encode("utf-16"), b"\0" * 4),
    "utf-16-le": (json.dumps({"t": _T}).encode("utf-16-le"), b"\0" * 4),
    "non-ascii name": (json.dumps({"é": _T}, ensure_ascii=False).encode(), b"\0" * 4),
    "dim 2**64": (json.dumps({"t": {"dtype": "F32", "shape": [2**64, 0], "data_offsets": [0, 0]}}).encode(), b""),
    "dim 2**63": (json.dumps({"t": {"dtype": "F32", "shape": [2**63, 0], "data_offsets": [0, 0]}}).encode(), b""),
    "dim 2**62": (json.dumps({"t": {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}}).encode(), b""),
    "product over 2**64": (json.dumps({"t": {"dtype": "F32", "shape": [2**32, 2**32, 0],
                                             "data_offsets": [0, 0]}}).encode(), b""),
    "offset 2**64": (json.dumps({"t": {"dtype": "F32", "shape": [0], "data_offsets": [2**64, 2**64]}}).encode(),
                     b""),
}


@pytest.mark.parametrize("case", list(EDGE_HEADERS))
def test_header_verdict_is_safetensors_own(tmp_path, case):
    path = _raw_file(tmp_path / "edge.safetensors", *EDGE_HEADERS[case])
    try:
        with safe_open(str(path), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
        theirs = True
    except (SafetensorError, TypeError, RuntimeError):  # TypeError/RuntimeError: torch cannot hold the shape
        theirs = False
    try:
        read_safetensors_header(path)
        ours = True
    except CheckpointError as e:
        assert str(e).startswith("edge.safetensors ") and "\n" not in str(e)
        ours = False
    assert ours == theirs


def test_malformed_header_is_listed_not_crashing_cli(tmp_path, tiny_checkpoint, input_png):
    for name, (header, data) in list(MALFORMED.items())[:6]:
        _raw_file(tmp_path / f"{name.replace(' ', '_')}.safetensors", header, data)
    (tmp_path / "tiny.safetensors").symlink_to(tiny_checkpoint)
    r = _cli("list", str(tmp_path), "--no-hf-cache")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.count("unusable: ") == 6 and "tiny.safetensors" in r.stdout
    r = _cli("sample", "x.png", "-c", str(tmp_path / "list.safetensors"))
    assert r.returncode == 2 and "list.safetensors has a malformed safetensors header" in r.stderr
    assert "Traceback" not in r.stderr
    import numpy as np

    from svd_core.video import to_gif

    clip = tmp_path / "clip.gif"
    clip.write_bytes(to_gif(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), np.uint8), 8))
    r = _cli("measure", clip, "-c", tmp_path / "no_dtype.safetensors", "--image", input_png, "--device", "cpu")
    assert r.returncode == 2 and "no_dtype.safetensors has a malformed safetensors header" in r.stderr


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


def test_a_checkpoint_whose_first_byte_is_0x80_loads(tmp_path, tiny_checkpoint):
    from safetensors.torch import load_file

    from svd_core import load_pipeline

    with safe_open(str(tiny_checkpoint), "pt") as f:
        meta = f.metadata()
    tensors, path, pad = load_file(tiny_checkpoint), tmp_path / "tiny.safetensors", 0
    for _ in range(4):  # the header grows by as many bytes as the padding note
        save_file(tensors, path, metadata={**meta, "note": "x" * pad})
        if _header_length(path) % 256 == 128:
            break
        pad += (128 - _header_length(path)) % 256
    assert path.read_bytes()[:1] == b"\x80"
    assert inspect_checkpoint(path).variant.name == "tiny" and scan_checkpoints(tmp_path)[1] == []
    assert load_pipeline(path, device="cpu", dtype=torch.float32).unet is not None


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

    def listing():
        out["r"] = scan_checkpoints(tmp_path)
        out["cli"] = _cli("list", tmp_path, "--no-hf-cache")
    t = threading.Thread(target=listing, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "pipe.safetensors", "wb"):
            pass
        pytest.fail("listing blocked on a FIFO")
    usable, problems = out["r"]
    assert usable == [] and "not a regular file" in problems[0][1]
    assert out["cli"].returncode == 0 and "pipe.safetensors" in out["cli"].stdout and "unusable: " in out["cli"].stdout


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
        os.utime(ck, ns=(1, 1))  # the file changed: its cached entry does not match it
        assert file_sha256(ck) == want
    finally:
        os.chmod(models, 0o755)


# ------------------------------------------------------------------------------------ tensors of the model

def _rewrite(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint `src` with some tensors replaced (keys given with '.' as '__')."""
    from safetensors.torch import load_file

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    tensors = load_file(src)
    tensors.update({k.replace("__", "."): v for k, v in changes.items()})
    save_file(tensors, dst, metadata=meta)
    return dst


UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.mark.parametrize("key, shape", [
    (UNET_IN, (32, 5, 3, 3)),  # the UNet's input channels
    ("conditioner.embedders.0.open_clip.model.visual.proj", (64, 16)),  # the image embedding's width
])
def test_wrong_shape_is_refused_at_load_naming_file_and_tensor(tmp_path, tiny_checkpoint, key, shape):
    from svd_core import load_pipeline

    bad = _rewrite(tiny_checkpoint, tmp_path / "bad.safetensors", **{key.replace(".", "__"): torch.randn(shape)})
    with pytest.raises(CheckpointError, match=r"^bad\.safetensors: model\.diffusion_model\.") as e:
        load_pipeline(bad, device="cpu", dtype=torch.float32)
    assert "\n" not in str(e.value) and (key in str(e.value))


def test_cli_wrong_shape_one_line(tmp_path, tiny_checkpoint, input_png):
    bad = _rewrite(tiny_checkpoint, tmp_path / "bad.safetensors",
                   **{UNET_IN.replace(".", "__"): torch.randn(32, 5, 3, 3)})
    r = _cli("sample", str(input_png), "-c", str(bad), "--out", str(tmp_path / "out"), "--width", "64", "--height",
             "64", "--num-frames", "2", "--num-inference-steps", "1")
    assert r.returncode == 2 and f"bad.safetensors: {UNET_IN} has shape [32, 5, 3, 3]" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- non-finite runs

def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} in a record: not strict JSON")
    return json.loads(text, parse_constant=refuse)


def test_nan_weights_are_refused_not_saved_as_black_video(tmp_path, tiny_checkpoint, input_png):
    from svd_core import Sampler, SamplingParams
    from svd_core.errors import NotFinite

    out_b = "model.diffusion_model.out.2.bias"  # the UNet's last bias: every latent it returns is NaN
    bad = _rewrite(tiny_checkpoint, tmp_path / "nan.safetensors", **{out_b.replace(".", "__"): torch.full(
        (4,), float("nan"))})
    sampler = Sampler(bad, device="cpu", dtype=torch.float32)
    params = SamplingParams.for_variant(sampler.info.variant, num_frames=2, num_inference_steps=1, width=64,
                                        height=64, decode_chunk_size=2)
    with pytest.raises(NotFinite, match="^nan.safetensors gave NaN or infinite latents"):
        sampler.generate(input_png, params)
    r = _cli("sample", str(input_png), "-c", str(bad), "--out", str(tmp_path / "out"), "--width", "64", "--height",
             "64", "--num-frames", "2", "--num-inference-steps", "1")
    assert r.returncode == 2 and "nan.safetensors gave NaN or infinite latents" in r.stderr
    assert "Traceback" not in r.stderr and not any((tmp_path / "out").glob("*/run.json"))


def test_run_json_is_strict_json_with_nan_metrics(tmp_path, tiny_sampler, input_png):
    from svd_core import SamplingParams, save_run

    params = SamplingParams.for_variant(tiny_sampler.info.variant, num_frames=2, num_inference_steps=1, width=64,
                                        height=64, decode_chunk_size=2)
    result = tiny_sampler.generate(input_png, params)
    result.metrics = {**result.metrics, "motion": {"score": float("nan"), "per_frame": [1.0, float("inf")]}}
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4",))
    record = _strict((path / "run.json").read_text())
    assert record["metrics"]["motion"] == {"score": None, "per_frame": [1.0, None]}


# --------------------------------------------------------------------------------------------- run records

def _small(sampler):
    return sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1, decode_chunk_size=2)


@pytest.fixture(scope="module")
def good_run(tiny_sampler, input_png, tmp_path_factory):
    from svd_core import save_run

    return save_run(tiny_sampler.generate(input_png, _small(tiny_sampler)), tiny_sampler.info,
                    tmp_path_factory.mktemp("good"), source=("photo.png", Path(input_png).read_bytes()))


def _with(record: dict, **changes) -> dict:
    return {**record, **changes}


BROKEN = {
    "list": lambda r: [],
    "empty": lambda r: {},
    "params list": lambda r: _with(r, params=[1, 2]),
    "params string": lambda r: _with(r, params="fast"),
    "params unknown knob": lambda r: _with(r, params={**r["params"], "warp": 9}),
    "checkpoint string": lambda r: _with(r, checkpoint="svd.safetensors"),
    "checkpoint null": lambda r: _with(r, checkpoint=None),
    "created a number": lambda r: _with(r, created=5),
    "cells not runs": lambda r: _with(r, kind="sweep", cells=[3]),
    "files outside": lambda r: _with(r, files=["../../etc/hostname"]),
    "params huge int": lambda r: _with(r, params={**r["params"], "num_frames": 10**400}),
    "params huge int in a list": lambda r: _with(r, params={**r["params"], "period": [10**400]}),
    "trajectory string": lambda r: _with(r, trajectory="denoising.mp4"),
    "trajectory outside": lambda r: _with(r, trajectory={"videos": ["../../etc/hostname"]}),
    "save_trajectory string": lambda r: _with(r, save_trajectory="yes"),
    # records that would load and then crash the summary line, History's cards or the sweep table
    "varied a list of lists": lambda r: _with(r, kind="sweep", varied=[[1]]),
    "seeds strings": lambda r: _with(r, kind="sweep", seeds=["a"]),
    "notes not strings": lambda r: _with(r, notes=[{"x": 1}]),
    "camera a number": lambda r: _with(r, effective={**r["effective"], "camera": 5}),
    "camera empty": lambda r: _with(r, effective={**r["effective"], "camera": {}}),
    "camera empty lists": lambda r: _with(r, effective={**r["effective"], "camera": {
        "elevations_deg": [], "azimuths_deg": []}}),
    "camera unequal lists": lambda r: _with(r, effective={**r["effective"], "camera": {
        "elevations_deg": [10.0, 10.0], "azimuths_deg": [0.0]}}),
    "camera strings": lambda r: _with(r, effective={**r["effective"], "camera": {
        "elevations_deg": ["a"], "azimuths_deg": ["b"]}}),
    "grid_fps a string": lambda r: _with(r, kind="sweep", grid_fps="x"),
    "processes a string": lambda r: _with(r, kind="sweep", processes="x"),
    "size three strings": lambda r: _with(r, size=["a", "b", "c"]),
    "size not positive": lambda r: _with(r, size=[0, 64]),
    "original_size a string": lambda r: _with(r, input={**r["input"], "original_size": "ab"}),
    "original_size floats": lambda r: _with(r, input={**r["input"], "original_size": [1.5, 2]}),
}

DEEP = "[" * 100_000 + "]" * 100_000  # the parser's recursion limit
LONG_INT = '{"params": {}, "checkpoint": {}, "seed": ' + "9" * 5000 + "}"  # over Python's int-conversion limit
HOSTILE_JSON = {"deep": DEEP, "deep object": '{"params": ' + DEEP + "}", "long int": LONG_INT}


@pytest.mark.parametrize("case", list(BROKEN))
def test_malformed_records_are_refused_in_one_line(tmp_path, good_run, case, tiny_checkpoint):
    from svd_core import RunRecord, load_run
    from svd_core.errors import RecordError

    record = BROKEN[case](json.loads((good_run / "run.json").read_text()))
    with pytest.raises(RecordError, match="^x is not a run record of SVD Studio") as e:
        RunRecord.from_json(record, "x")
    assert "\n" not in str(e.value)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(record))
    with pytest.raises(RecordError, match="^run/run.json is not a run record"):
        load_run(folder)
    if case in ("params list", "checkpoint null", "params huge int"):  # the CLI: one line, exit 2
        r = _cli("sample", "--from", str(folder / "run.json"), "-c", str(tiny_checkpoint), "--out",
                 str(tmp_path / "out"))
        assert r.returncode == 2 and "is not a run record of SVD Studio" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("case", list(HOSTILE_JSON))
def test_hostile_json_is_one_record_error_naming_the_file(tmp_path, case):
    """Too deep to parse, or an integer too long to convert: RecordError naming the file wherever a run.json or
    a denoising record is read, and a start-up (clean_stale_temp) or History's listing (scan_runs) goes on."""
    from svd_core.runs import RunInfo, clean_stale_temp, load_run, read_record, scan_runs

    out = tmp_path / "outputs"
    (out / "run").mkdir(parents=True)
    (out / "run" / "run.json").write_text(HOSTILE_JSON[case])
    for read in (lambda: read_record(out / "run" / "run.json", "run/run.json"), lambda: load_run(out / "run")):
        with pytest.raises(RecordError, match="^run/run.json is not readable JSON") as e:
            read()
        assert "\n" not in str(e.value)
    assert clean_stale_temp(out) == [] and (out / "run").is_dir()  # an unreadable folder is not a cell to settle
    runs, problems = scan_runs(out)
    assert runs == [] and [(p.name, why.startswith("run/run.json is not readable JSON")) for p, why in problems] == [
        ("run", True)]
    (out / "run" / "denoising.json").write_text(HOSTILE_JSON[case])
    info = RunInfo(out / "run", None)
    with pytest.raises(RecordError, match="^run/denoising.json is not readable JSON"):
        info.trajectory_stats("denoising.mp4")


def test_an_mp4_whose_record_is_hostile_json_is_one_line(tmp_path, monkeypatch):
    import numpy as np

    from svd_core import read_video_record
    from svd_core import video as svd_video

    hostile = '{"svd_studio":1,"x":' + "[" * 3000 + "]" * 3000 + "}"
    monkeypatch.setattr(svd_video, "_comment", lambda metadata: hostile)  # a comment no record of ours makes
    mp4 = tmp_path / "deep.mp4"
    mp4.write_bytes(svd_video.to_mp4(np.zeros((2, 16, 16, 3), np.uint8), 8, metadata={"svd_studio": 1}))
    assert svd_video.read_tags(mp4)["comment"] == hostile
    with pytest.raises(RecordError, match="^deep.mp4 is not readable JSON"):
        read_video_record(mp4)
    with pytest.raises(RecordError, match="^the uploaded video is not readable JSON"):
        read_video_record(mp4.read_bytes())


def test_malformed_mp4_record_is_refused_in_one_line(tmp_path, tiny_checkpoint):
    import numpy as np

    from svd_core import read_video_record
    from svd_core.video import to_mp4

    for i, record in enumerate(({"svd_studio": 1, "params": "x", "checkpoint": {"file": "a"}},
                                {"svd_studio": 1, "params": {}, "checkpoint": "a.safetensors"})):
        mp4 = tmp_path / f"v{i}.mp4"
        mp4.write_bytes(to_mp4(np.zeros((2, 16, 16, 3), np.uint8), 8, metadata=record))
        with pytest.raises(ValueError, match=f"v{i}.mp4 is not a run record of SVD Studio"):
            read_video_record(mp4)
        r = _cli("sample", "--from", str(mp4), "-c", str(tiny_checkpoint), "--out", str(tmp_path / "out"))
        assert r.returncode == 2 and "is not a run record" in r.stderr and "Traceback" not in r.stderr


def test_list_runs_skips_symlinks_and_reports_unreadable(tmp_path, good_run):
    from svd_core.runs import list_runs, scan_runs

    out = tmp_path / "outputs"
    out.mkdir()
    (out / "elsewhere").symlink_to(good_run)  # a link to a run outside outputs/ is not a run of outputs/
    (out / "bad").mkdir()
    (out / "bad" / "run.json").write_text("[]")
    runs, problems = scan_runs(out)
    assert runs == [] and [p.name for p, _ in problems] == ["bad"] and list_runs(out) == []


# ------------------------------------------------------------------------------------------------ the pages

def test_history_survives_broken_records_and_hostile_posters(dirs, good_run, tiny_checkpoint, no_external_programs):  # noqa: F811
    import shutil

    from .apptest import app, button

    ck, out = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    out.mkdir()
    shutil.copytree(good_run, out / good_run.name)
    (out / good_run.name / "poster.png").write_bytes(EPS)  # a poster that is not what its name says
    calib = out / "calib"  # a calibration run whose plot is not what its name says
    shutil.copytree(good_run, calib)
    record = json.loads((calib / "run.json").read_text())
    (calib / "run.json").write_text(json.dumps({**record, "calibration": {"summary": "found 42"}}))
    (calib / "calibration.png").write_bytes(EPS)
    shutil.copytree(calib, out / "calib2")  # and one whose plot is a PNG
    (out / "calib2" / "calibration.png").write_bytes((good_run / "poster.png").read_bytes())
    (out / "huge").mkdir()  # a huge int in a record
    (out / "huge" / "run.json").write_text(json.dumps({**record, "params": {**record["params"], "seed": 10**400}}))
    sv3d = {**record, "checkpoint": {**record["checkpoint"], "variant": "sv3d_p"}}
    hostile = [  # records that would load and then break the summary line of a card, and JSON too hostile to parse
        json.dumps({**record, "kind": "sweep", "varied": [[1]], "cells": [{"run": "gone", "label": "a"}]}),
        *(json.dumps({**sv3d, "effective": {"camera": camera}}) for camera in (5, {}, {
            "elevations_deg": [], "azimuths_deg": []})),
        json.dumps({**record, "size": ["a", "b", "c"]}), DEEP, LONG_INT]
    for i, text in enumerate(["[]", "{}", json.dumps({"created": 5, "params": {}, "checkpoint": {}}), "{nope",
                              *hostile]):
        (out / f"bad{i}").mkdir()
        (out / f"bad{i}" / "run.json").write_text(text)
    (out / "link").symlink_to(good_run)
    at = app("history")
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption]
    assert sum("Unreadable run" in c for c in captions) == 5 + len(hostile)
    assert sum("found 42" in c for c in captions) == 2  # the calibration runs are shown, the EPS plot is not
    assert len(at.get("image")) == 3  # the posters of calib and calib2, calib2's plot
    assert any(good_run.name in m.value for m in at.markdown) and not any("`link`" in m.value for m in at.markdown)
    button(at, "Use these settings").click().run()  # the good run still works
    assert not at.exception and at.session_state["image"].name == "photo.png"
    assert no_external_programs == []


BAD_STATS = {"a list": [], "rows not objects": {"steps": [3]},
             "sigma a string": {"steps": [{"step": 1, "steps": 1, "sigma": "big", "estimate_change": None}]},
             "estimate_change a string": {"steps": [{"step": 1, "steps": 1, "sigma": 1.0, "estimate_change": "x"}]}}


@pytest.mark.parametrize("case", list(BAD_STATS))
def test_malformed_denoising_stats_are_refused_in_one_line(case):
    from svd_core.runs import RecordError, validate_trajectory_stats

    with pytest.raises(RecordError, match="^d.json is not a denoising record of SVD Studio"):
        validate_trajectory_stats(BAD_STATS[case], "d.json")
    good = [{"step": 1, "steps": 2, "sigma": 1.5, "estimate_change": None},
            {"step": 2, "steps": 2, "sigma": 0.5, "estimate_change": [0.1, 2]}]
    assert validate_trajectory_stats({"steps": good}, "d.json") == good


def test_history_survives_malformed_denoising_records_and_odd_summaries(dirs, good_run, tiny_checkpoint):  # noqa: F811
    """Records the validator accepts (created null, cells without params or coords) and denoising.json files
    that are not ours: the page renders, every run is listed, the bad records get one line each."""
    import shutil

    from .apptest import app

    ck, out = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    out.mkdir()
    record = json.loads((good_run / "run.json").read_text())
    names = []
    for i, stats in enumerate(BAD_STATS.values()):
        folder = out / f"traj{i}"
        shutil.copytree(good_run, folder)
        shutil.copy(good_run / "video.mp4", folder / "denoising.mp4")
        (folder / "denoising.json").write_text(json.dumps(stats))
        (folder / "run.json").write_text(json.dumps({**record, "save_trajectory": True, "trajectory": {
            "videos": ["denoising.mp4"], "stats": ["denoising.json"]}}))
        names.append(folder.name)
    (out / "nulldate").mkdir()
    (out / "nulldate" / "run.json").write_text(json.dumps({**record, "created": None}))
    (out / "bare").mkdir()  # a comparison whose cells say only {run, label}
    (out / "bare" / "run.json").write_text(json.dumps({**record, "kind": "sweep", "varied": ["motion_bucket_id"],
                                                       "cells": [{"run": "gone", "label": "a"}]}))
    names += ["nulldate", "bare"]
    at = app("history")
    assert not at.exception, [e.value for e in at.exception]
    for i in range(len(BAD_STATS)):
        at.toggle(key=f"traj-traj{i}").set_value(True)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert all(any(f"`{n}`" in m.value for m in at.markdown) for n in names)
    assert sum("unreadable denoising record" in c.value for c in at.caption) == len(BAD_STATS)
    assert not at.slider


def test_upload_of_eps_named_png_is_refused_on_the_page(dirs, tiny_checkpoint, no_external_programs):  # noqa: F811
    from .apptest import app, button

    ck, _ = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    at = app()
    at.file_uploader(key="upload_gen").set_value(("x.png", EPS, "image/png")).run()
    assert not at.exception
    assert any("not a readable image" in e.value for e in at.error)
    assert button(at, "Generate video").disabled and no_external_programs == []


def test_setup_page_lists_malformed_checkpoints(dirs, tiny_checkpoint):  # noqa: F811
    from .apptest import app

    ck, _ = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    for name, (header, data) in list(MALFORMED.items())[:4]:
        _raw_file(ck / f"{name.replace(' ', '_')}.safetensors", header, data)
    os.mkfifo(ck / "pipe.safetensors")
    for page in (None, "history", "setup"):  # app() asserts that no page raised
        at = app(page)
    warnings = [w.value for w in at.warning]
    assert sum("malformed safetensors header" in w for w in warnings) == 4
    assert any("`pipe.safetensors`" in w and "not a regular file" in w for w in warnings)


# ------------------------------------------------------------------------------------------ outputs, knobs

@pytest.mark.parametrize("extra, match", [
    (["--format", ""], "--format names no format"),
    (["--format", " , "], "--format names no format"),
    (["--out", "FILE"], "is a file, not a folder"),
])
def test_unwritable_outputs_refused_before_the_model_loads(tmp_path, tiny_checkpoint, input_png, monkeypatch,
                                                           capsys, extra, match):
    from svd_core import __main__ as cli
    from svd_core import session

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(session.Sampler, "__init__", no_loading)
    existing = tmp_path / "out.txt"
    existing.write_text("mine")
    extra = [str(existing) if a == "FILE" else a for a in extra]
    out = ["--out", str(tmp_path / "runs")] if "--out" not in extra else []
    assert cli.main(["sample", str(input_png), "-c", str(tiny_checkpoint), *out, *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and existing.read_text() == "mine"
    if "--out" in extra:  # a sweep and a calibration too
        assert cli.main(["sweep", str(input_png), "-c", str(tiny_checkpoint), "--vary", "motion_bucket_id=1,2",
                         *extra]) == 2
        assert match in capsys.readouterr().err
        assert cli.main(["calibrate", str(input_png), "-c", str(tiny_checkpoint), "--target-motion", "1",
                         *extra]) == 2
        assert match in capsys.readouterr().err


def test_nan_knob_is_named():
    from svd_core import SamplingParams

    for knob in ("motion_bucket_id", "noise_aug_strength", "fps"):
        with pytest.raises(ValueError, match=f"^{knob} must be"):
            SamplingParams(**{knob: float("nan")})
    with pytest.raises(ValueError, match="^max_guidance_scale must be"):
        SamplingParams(max_guidance_scale=float("inf"))


def test_huge_ints_are_refused_in_one_line(tmp_path, input_png, tiny_checkpoint):
    from svd_core import SamplingParams

    for knob in ("num_frames", "seed", "motion_bucket_id", "fps", "max_guidance_scale"):
        with pytest.raises(ValueError, match=f"^{knob} must be"):
            SamplingParams(**{knob: 10**400})
    with pytest.raises(ValueError, match="^period must be a list of numbers"):
        SamplingParams(period=[10**400])
    for command in (["sample"], ["calibrate", "--target-motion", 1]):
        r = _cli(*command, input_png, "-c", tiny_checkpoint, "--seed", 10**400, "--out", tmp_path / "out")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "seed must be" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------ kills and leftovers

KILL_BETWEEN_RENAMES = """
import os, signal, sys
import svd_core.runs as runs
from svd_core import Sampler, grid_cells, run_sweep
real, seen = os.replace, []
def replace(src, dst):  # the process is killed just before the sweep folder's own rename
    if os.path.basename(str(dst)).startswith("sweep-"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
runs.os.replace = replace
s = Sampler(sys.argv[1], device="cpu")
base = s.default_params(width=64, height=64, num_frames=2, num_inference_steps=1, decode_chunk_size=2)
run_sweep(s, sys.argv[2], grid_cells(base, {"motion_bucket_id": [1, 2]}), out_dir=sys.argv[3])
"""


@pytest.mark.slow
def test_sweep_killed_between_its_renames_leaves_no_run(tmp_path, tiny_checkpoint, input_png):
    from svd_core.runs import clean_stale_temp, list_runs

    out = tmp_path / "outputs"
    r = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(tiny_checkpoint), str(input_png), str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == -9, r.stderr
    cells = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(cells) == 2  # the kill came after both cells' renames
    assert list_runs(out) == []  # cells of a sweep that never landed are not runs
    clean_stale_temp(out)  # the next start
    assert list(out.iterdir()) == []


def test_a_landed_sweep_keeps_its_cells_and_export_scratch_stays_in_the_run(tmp_path, tiny_sampler, input_png,
                                                                             monkeypatch):
    from svd_core import grid_cells, run_sweep, video
    from svd_core.runs import clean_stale_temp, list_runs

    written, real = [], video.subprocess.Popen

    def popen(cmd, *args, **kwargs):
        if str(cmd[-1]).endswith(".mp4"):
            written.append(Path(cmd[-1]).parent)  # ffmpeg's scratch folder: the mp4 it writes and its tags file
        return real(cmd, *args, **kwargs)
    monkeypatch.setattr(video.subprocess, "Popen", popen)
    out = tmp_path / "outputs"
    res = run_sweep(tiny_sampler, input_png, grid_cells(_small(tiny_sampler), {"motion_bucket_id": [1, 2]}),
                    out_dir=out)
    assert len(written) == 3  # two cells' video.mp4 and the grid.mp4
    for path in written:  # ffmpeg's scratch file was inside the run's own temporary folder
        assert path.parent.parent == out and path.parent.name.startswith(".tmp-"), path
    clean_stale_temp(out)  # a landed sweep is left as it is
    assert {r.path for r in list_runs(out)} == {res.path, *res.run_paths}
    assert not any("sweep_pending" in (p / "run.json").read_text() for p in res.run_paths)


def test_repair_sweeps_leaves_a_live_writers_cells_alone(tmp_path):
    from svd_core import ModelSpec, RunRecord, RunRequest, SamplingParams
    from svd_core.runs import clean_stale_temp, repair_sweeps, write_record

    out = tmp_path / "outputs"
    out.mkdir()
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        def cell(name, sweep):
            (out / name).mkdir()
            write_record(out / name, RunRecord(RunRequest(SamplingParams(), ModelSpec("tiny.safetensors")),
                                               "tiny.safetensors", "tiny", sweep=sweep, sweep_pending=True))
            return out / name
        (out / f".tmp-{live.pid}-sweep-live").mkdir()  # its writer is between its renames
        (out / f".tmp-{dead.pid}-sweep-dead").mkdir()  # its writer was killed
        (out / "sweep-landed").mkdir()
        cells = {"live": cell("c-live", "sweep-live"), "landed": cell("c-landed", "sweep-landed"),
                 "dead": cell("c-dead", "sweep-dead"), "none": cell("c-none", "sweep-none"),
                 "not a name": cell("c-path", "x/../sweep-landed")}
        assert sorted(p.name for p in repair_sweeps(out)) == ["c-dead", "c-none"]
        pending = {k: json.loads((p / "run.json").read_text()).get("sweep_pending") for k, p in cells.items()
                   if p.is_dir()}
        assert pending == {"live": True, "landed": None, "not a name": True}
        (out / "c-unreadable").mkdir()  # an unreadable cell is skipped: listed as unreadable, never a crash
        (out / "c-unreadable" / "run.json").write_text('{"sweep": "sweep-none", "sweep_pending": true, "x": '
                                                       + "[" * 100_000 + "}")
        with pytest.raises(TypeError, match="writes a RunRecord, not a dict"):  # written through the type alone
            write_record(out / "c-landed", {"sweep": "sweep-landed"})
        assert not any(".run.json" in p.name for p in out.iterdir())  # settling left no temporary record
        (out / f".tmp-{dead.pid}-c-landed.run.json").write_text("{")  # as a kill while settling would leave
        assert sorted(clean_stale_temp(out)) == [out / f".tmp-{dead.pid}-c-landed.run.json",
                                                 out / f".tmp-{dead.pid}-sweep-dead"]  # the live writer's stays
        assert sorted(p.name for p in out.iterdir()) == [f".tmp-{live.pid}-sweep-live", "c-landed", "c-live",
                                                         "c-path", "c-unreadable", "sweep-landed"]
    finally:
        live.kill()
        live.wait()


def _linked_run(good_run, out: Path, secret: Path) -> Path:
    """A copy of `good_run` in `out` whose video, poster and input images are symlinks to files elsewhere."""
    import shutil

    run = out / good_run.name
    shutil.copytree(good_run, run)
    originals = [f for f in os.listdir(run) if f.startswith("input_original")]
    for name in ["video.mp4", "poster.png", "input.png", *originals]:
        target = secret.with_name(f"secret-{name}")
        shutil.copy(run / name, target)
        (run / name).unlink()
        (run / name).symlink_to(target)
    return run


def test_run_files_are_regular_files_inside_the_run(tmp_path, good_run):
    from svd_core import load_run

    run = _linked_run(good_run, tmp_path, tmp_path / "secret")
    info = load_run(run)
    assert info.file("video.mp4") is None and info.file("poster.png") is None and info.original_input is None
    (run / "dir.png").mkdir()
    for name in ("dir.png", "../good/run.json", "missing.mp4", ""):
        assert info.file(name) is None, name
    assert info.file("run.json") == run / "run.json" and load_run(good_run).file("video.mp4") == good_run / "video.mp4"


def test_history_serves_no_symlinked_run_file(dirs, good_run, tiny_checkpoint):  # noqa: F811
    from .apptest import app, button

    ck, out = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    out.mkdir()
    run = _linked_run(good_run, out, ck.parent / "secret")
    at = app("history")
    assert at.get("video") == [] and any("no poster" in c.value for c in at.caption)
    button(at, "Use these settings").click().run()
    assert not at.exception and "image" not in at.session_state  # its image was a link: nothing loaded
    assert any("has no input image" in i.value for i in at.info)
    for name in ("video.mp4", "poster.png"):  # the same run with its own files shows them
        (run / name).unlink()
        (run / name).write_bytes((good_run / name).read_bytes())
    at = app("history")
    assert len(at.get("video")) == 1 and not any("no poster" in c.value for c in at.caption)
