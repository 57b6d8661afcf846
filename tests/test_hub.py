"""Downloads from a local stand-in for the Hugging Face Hub (never the network), models found in a fake
Hugging Face cache, and the listing of unusable files."""

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from svd_core import Cancelled, hub, load_pipeline
from svd_core.checkpoints import (
    cache_dir,
    find_models,
    get_variant,
    inspect_checkpoint,
    resolve_checkpoint,
    scan_checkpoints,
    scan_hf_cache,
)
from svd_core.errors import CheckpointError, DownloadError

from .helpers import cli

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD_TOKEN = "hf_good_token_for_tests"


# ------------------------------------------------------------------------------------- the hub stand-in

class FakeHub(ThreadingHTTPServer):
    """Answers like huggingface.co: HEAD on /<repo>/resolve/main/<file> redirects to a CDN url on another host
    name (localhost vs 127.0.0.1) with X-Linked-Etag (the LFS sha256), X-Linked-Size and X-Repo-Commit; the CDN
    serves the bytes with Content-Length and Range. `mode` switches on the failures."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.sha_override = None
        self.requests: list[tuple[str, str, dict]] = []
        self.errors: list[BaseException] = []
        self.cuts = 0

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):  # a client that hung up is not an error
            self.errors.append(exc)


class Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path, dict(self.headers)))
        m = re.fullmatch(r"/(.+)/resolve/main/(.+)", self.path)
        assert m, f"unexpected HEAD {self.path}"
        repo, name = m.groups()
        mode = self.server.mode
        if mode == "gated401":
            return self._error(401, "GatedRepo", f"Access to model {repo} is restricted. Please log in.")
        if mode == "gated403":
            return self._error(403, "GatedRepo", f"Access to model {repo} is restricted and you are not in the "
                                                 "authorized list.")
        if mode == "badtoken" or self.headers.get("authorization") not in (None, f"Bearer {GOOD_TOKEN}"):
            return self._error(401, None, "Invalid credentials in Authorization header")
        data = self.server.files.get(f"{repo}/{name}")
        if data is None or mode == "404":
            return self._error(404, "EntryNotFound", f"{name} does not exist on main")
        sha = self.server.sha_override or hashlib.sha256(data).hexdigest()
        self.send_response(302)
        self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/cdn/{repo}/{name}")
        self.send_header("ETag", '"0f0f0f0f"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.server.requests.append(("GET", self.path, dict(self.headers)))
        if self.path == "/api/agent-harnesses":  # huggingface_hub asks for its agent registry (best effort)
            return self._error(404, None, "not served here")
        assert self.path.startswith("/cdn/"), f"unexpected GET {self.path}"
        data = self.server.files[self.path[len("/cdn/"):]]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, f"unexpected Range {rng}"
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = data[start:]
        if self.server.mode == "cut_once" and self.server.cuts == 0:
            self.server.cuts += 1
            self.wfile.write(body[: len(body) // 2])  # then hang up: the client sees a short body
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _error(self, status, code, message):
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def fake_hub(monkeypatch, tiny_checkpoint):
    """The stand-in, with huggingface_hub pointed at it for this test only: its constants are read at import
    time (HF_HUB_OFFLINE=1 from conftest, the endpoint and the url template), so they are patched where they live."""
    from huggingface_hub import constants

    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 20)  # several progress calls for a 28 MB file
    v = get_variant("svd_xt")
    server.files[f"{v.repo_id}/{v.filename}"] = tiny_checkpoint.read_bytes()
    yield server
    server.shutdown()
    server.server_close()
    assert not server.errors, f"the hub stand-in failed: {server.errors!r}"
    assert all(not r[2].get("Host", "").startswith("huggingface.co") for r in server.requests)


def _files(folder: Path):
    """What a download left (its lock file included: it must not be left behind)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_complete_download(fake_hub, tmp_path, tiny_checkpoint):
    calls = []
    path = hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN, on_progress=lambda d, t: calls.append((d, t)))
    data = tiny_checkpoint.read_bytes()
    assert path == tmp_path / "svd_xt.safetensors" and path.read_bytes() == data
    assert _files(tmp_path) == ["svd_xt.safetensors"]  # no partial file left, nothing else beside it
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data)) and len(calls) > 3
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    cached = [json.loads(f.read_text()) for f in (cache_dir() / "sha256").glob("*.json")]  # the studio's cache
    assert {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest()}.items() <= \
        next(c for c in cached if c["path"] == str(path.resolve())).items()
    assert inspect_checkpoint(path).variant.name == "tiny"  # the file's own metadata: it is the tiny model
    head = [r for r in fake_hub.requests if r[0] == "HEAD"]
    get = [r for r in fake_hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]
    assert head[0][2].get("authorization") == f"Bearer {GOOD_TOKEN}"
    assert get and all("authorization" not in {k.lower() for k in r[2]} for r in get)  # never to the CDN host
    for p in tmp_path.iterdir():
        assert GOOD_TOKEN.encode() not in p.read_bytes()
    again = hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)  # already there: no second download
    assert again == path and len([r for r in fake_hub.requests if r[1].startswith("/cdn/")]) == len(get)


def test_connection_cut_half_way_resumes(fake_hub, tmp_path, tiny_checkpoint):
    fake_hub.mode = "cut_once"
    path = hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    data = tiny_checkpoint.read_bytes()
    assert path.read_bytes() == data
    ranges = [r[2].get("Range") for r in fake_hub.requests if r[1].startswith("/cdn/")]
    assert len(ranges) == 2 and ranges[0] is None
    assert 0 < int(ranges[1][6:-1]) <= len(data) // 2  # the second asks only for what was not yet written


def test_cancel_keeps_no_checkpoint_and_a_later_call_resumes(fake_hub, tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    seen = [0]
    with pytest.raises(Cancelled, match="download again to resume"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN, should_stop=lambda: seen[-1] > len(data) // 3,
                     on_progress=lambda d, t: seen.append(d))
    assert not list(tmp_path.glob("*.safetensors"))
    (partial,) = hub.partial_downloads("svd_xt", tmp_path)
    assert partial.name.startswith(".") and 0 < partial.stat().st_size < len(data)
    usable, problems = scan_checkpoints(tmp_path)
    assert not usable and problems[0][0] == partial and "download svd_xt" in problems[0][1]
    kept = partial.stat().st_size
    path = hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    assert path.read_bytes() == data
    assert [r[2].get("Range") for r in fake_hub.requests if r[1].startswith("/cdn/")][-1] == f"bytes={kept}-"
    assert not hub.partial_downloads("svd_xt", tmp_path)


def test_wrong_sha256_is_rejected_and_nothing_left(fake_hub, tmp_path):
    fake_hub.sha_override = "ab" * 32
    with pytest.raises(DownloadError, match="does not match the hub's sha256"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("mode, token, match", [
    ("gated401", False, r"is gated and no Hugging Face token was accepted.*licence at http://127\.0\.0\.1:\d+/"
                        r"stabilityai/stable-video-diffusion-img2vid-xt$"),
    ("gated403", GOOD_TOKEN, r"has not accepted the licence of .*accept it at http://127\.0\.0\.1:\d+/stabilityai/"),
    ("badtoken", "hf_wrong", r"token was refused \(401 Unauthorized\)"),
    ("404", GOOD_TOKEN, r"svd_xt\.safetensors was not found in .* \(404\)"),
])
def test_access_errors_are_one_clear_line(fake_hub, tmp_path, mode, token, match):
    fake_hub.mode = mode
    with pytest.raises(DownloadError, match=match) as e:
        hub.download("svd_xt", folder=tmp_path, token=token)
    assert "\n" not in str(e.value) and "hf_wrong" not in str(e.value)
    assert _files(tmp_path) == []


def test_no_network(monkeypatch, tmp_path):
    from huggingface_hub import constants

    closed = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(DownloadError, match=r"cannot reach the Hugging Face Hub \(127\.0\.0\.1:\d+\)"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_disk_space_checked_before_and_full_disk_during(fake_hub, tmp_path, monkeypatch):
    real = hub.shutil.disk_usage
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: real(p)._replace(free=5_000_000))
    with pytest.raises(DownloadError, match=r"not enough disk space in .*: svd_xt\.safetensors needs 28\.\d MB more, "
                                            r"5\.0 MB free"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    assert not [r for r in fake_hub.requests if r[1].startswith("/cdn/")]  # refused before any byte
    monkeypatch.setattr(hub.shutil, "disk_usage", real)
    written = []

    def full_after_a_while(self, data):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        self.sha.update(data)
        return self.f.write(data)
    monkeypatch.setattr(hub._HashingWriter, "write", full_after_a_while)
    with pytest.raises(DownloadError, match=r"disk of .* is full: free some space and download again to resume; "
                                            r"1\.0 MB kept"):
        hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    assert not list(tmp_path.glob("*.safetensors"))


def test_one_download_at_a_time(fake_hub, tmp_path):
    from filelock import FileLock

    with FileLock(str(tmp_path / ".svd_xt.safetensors.lock")):  # another process holds it
        with pytest.raises(DownloadError, match="already being downloaded"):
            hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN)
    assert hub.download("svd_xt", folder=tmp_path, token=GOOD_TOKEN).is_file()


def test_unknown_release_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="downloadable: svd, svd_image_decoder, svd_xt, svd_xt_image_decoder, "
                                         "svd_xt_1_1, sv3d_u, sv3d_p$"):
        hub.download("tiny", folder=tmp_path)


@pytest.mark.slow
def test_cli_download_and_errors(fake_hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env["HF_ENDPOINT"] = fake_hub.endpoint
    cmd = [sys.executable, "-m", "svd_core", "download", "svd_xt", "--dir", str(tmp_path)]
    r = subprocess.run(cmd + ["--token", GOOD_TOKEN], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "svd_xt.safetensors").is_file() and "svd_xt.safetensors" in r.stdout
    assert re.search(r"MB/s|kB/s|B/s", r.stderr)  # tqdm's bar with its speed
    fake_hub.mode = "gated403"
    r = subprocess.run(cmd + ["--dir", str(tmp_path / "other")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert line.startswith("error: DownloadError:") and "accept it at" in line


# ------------------------------------------------------------------------------------ listing problems

def test_list_shows_broken_files_with_the_reason(tmp_path, tiny_checkpoint):
    (tmp_path / "tiny.safetensors").symlink_to(tiny_checkpoint)
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "svd_xt.safetensors").write_bytes(data[: len(data) // 3])
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04junk")
    _sv3d_like(tmp_path / "orbit.safetensors", 100)  # SV3D's layout, a conditioning width neither model has
    (tmp_path / "README.md").write_text("not a checkpoint, not listed")
    usable, problems = scan_checkpoints(tmp_path)
    assert [c.name for c in usable] == ["tiny.safetensors"]
    reasons = {p.name: r for p, r in problems}
    assert set(reasons) == {"svd_xt.safetensors", "old.ckpt", "orbit.safetensors"}
    assert "truncated" in reasons["svd_xt.safetensors"] and "pickle" in reasons["old.ckpt"]
    assert "SV3D's layout but a conditioning vector of width 100" in reasons["orbit.safetensors"]
    r = cli("list", tmp_path, "--no-hf-cache")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and lines[0].split()[:2] == ["model", "variant"] and lines[1].startswith("tiny.safetensors")
    for name in ("svd_xt.safetensors", "old.ckpt", "orbit.safetensors"):
        (line,) = [x for x in lines if x.startswith(name)]
        assert "unusable: " + reasons[name] in line


def _sv3d_like(path, width, extra=()):
    """Keys of the SV3D layout (conditioning VAE under conditioner.embedders.1, no fps/motion embedders) with
    the label_emb input width that tells sv3d_u (256) from sv3d_p (1280)."""
    keys = ["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.open_clip.model.visual.proj",
            "conditioner.embedders.1.encoder.encoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight",
            "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight", *extra]
    tensors = {k: torch.zeros(1) for k in keys}
    tensors["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(4, width)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("width, kind", [(256, "sv3d_u"), (1280, "sv3d_p")])
def test_sv3d_is_named_not_called_incomplete(tmp_path, width, kind):
    path = _sv3d_like(tmp_path / "model.safetensors", width)
    assert inspect_checkpoint(path).variant.family == kind  # the width names it, not the file name
    with pytest.raises(CheckpointError, match=r"^cannot read the architecture of model\.safetensors"):
        load_pipeline(path, device="cpu")  # a header of SV3D's layout, not the whole model: one line, named
    svd = _sv3d_like(tmp_path / "svd.safetensors", 768, ["conditioner.embedders.3.encoder.encoder.conv_in.weight"])
    with pytest.raises(CheckpointError, match="incomplete"):  # SVD's layout (embedders.3): not taken for SV3D
        inspect_checkpoint(svd)


# ------------------------------------------------------------------------------- the Hugging Face cache

@pytest.fixture(scope="module")
def tiny_pipeline(tiny_checkpoint):
    return load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)


def _cache_repo(cache: Path, repo_id: str, folder: Path, commit=COMMIT):
    """Lay `folder` out as huggingface_hub caches a repo: blobs named by hash, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def _set_config(folder: Path, component: str, **values):
    cfg = folder / component / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **values}))


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory, tiny_pipeline):
    """A Hugging Face cache with: the tiny pipeline as '...-xt' in float32 + fp16 variant (the fp16 weights
    halved, so a test sees which files were read), an '...-img2vid' repo with fp16 only, a non-SVD repo, and
    a repo with a missing component."""
    root = tmp_path_factory.mktemp("hf")
    both = root / "both"
    tiny_pipeline.save_pretrained(both)
    half = root / "half"
    tiny_pipeline.save_pretrained(half)
    from diffusers import StableVideoDiffusionPipeline

    p16 = StableVideoDiffusionPipeline.from_pretrained(half, torch_dtype=torch.float16)
    with torch.no_grad():
        p16.unet.conv_in.weight.mul_(0.5)
    p16.save_pretrained(both, variant="fp16")
    p16.save_pretrained(root / "fp16only", variant="fp16")
    _set_config(root / "fp16only", "unet", num_frames=14)
    (root / "other").mkdir()
    (root / "other" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    broken = root / "broken"
    tiny_pipeline.save_pretrained(broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    cache = root / "cache"
    _cache_repo(cache, "stabilityai/stable-video-diffusion-img2vid-xt", both)
    _cache_repo(cache, "stabilityai/stable-video-diffusion-img2vid", root / "fp16only")
    _cache_repo(cache, "someone/sd15", root / "other")
    _cache_repo(cache, "someone/svd-broken", broken)
    return cache, p16.unet.conv_in.weight.detach().clone(), tiny_pipeline.unet.conv_in.weight.detach().clone()


def test_hf_cache_discovery_prefers_fp16(fake_cache, tmp_path):
    cache, w16, w32 = fake_cache
    usable, problems = scan_hf_cache(cache)
    by_repo = {c.repo_id: c for c in usable}
    assert set(by_repo) == {"stabilityai/stable-video-diffusion-img2vid-xt",
                            "stabilityai/stable-video-diffusion-img2vid"}
    xt = by_repo["stabilityai/stable-video-diffusion-img2vid-xt"]
    assert xt.diffusers_folder and xt.dtype == "float16" and xt.path.parent.name == "snapshots"
    assert xt.label.startswith("stabilityai/stable-video-diffusion-img2vid-xt")
    again = inspect_checkpoint(xt.path)  # a snapshot path given directly (as --checkpoint or a run's record)
    assert again.repo_id == again.name == "stabilityai/stable-video-diffusion-img2vid-xt"
    (bad_path, reason), = problems
    assert "someone/svd-broken" in reason and "incomplete" in reason
    pipe = load_pipeline(xt.path, device="cpu", dtype=torch.float16)  # offline (HF_HUB_OFFLINE=1): cache only
    assert pipe.unet.dtype == torch.float16 and torch.equal(pipe.unet.conv_in.weight, w16)
    full = load_pipeline(xt.path, device="cpu", dtype=torch.float32)  # float32 asked and present: not upcast fp16
    assert torch.equal(full.unet.conv_in.weight, w32)
    only16 = load_pipeline(by_repo["stabilityai/stable-video-diffusion-img2vid"].path, device="cpu",
                           dtype=torch.float32)  # only fp16 there: it is what loads
    assert torch.equal(only16.unet.conv_in.weight, w16.float())
    both, _ = find_models(tmp_path, cache_dir=cache)
    assert len(both) == 2


def test_checkpoint_argument_resolves_cache_repo_ids(fake_cache, tmp_path, tiny_checkpoint):
    cache, _, _ = fake_cache
    xt = "stabilityai/stable-video-diffusion-img2vid-xt"
    assert resolve_checkpoint(xt, cache_dir=cache).parent.name == "snapshots"
    assert resolve_checkpoint(None, folder=tmp_path, cache_dir=cache).parts[-3].startswith("models--stabilityai")
    (tmp_path / "tiny.safetensors").symlink_to(tiny_checkpoint)
    assert resolve_checkpoint(None, folder=tmp_path, cache_dir=cache) == tmp_path / "tiny.safetensors"
    with pytest.raises(CheckpointError, match="^someone/else is neither a file nor an SVD pipeline"):
        resolve_checkpoint("someone/else", cache_dir=cache)
    missing = tmp_path / "nope" / "svd.safetensors"
    assert resolve_checkpoint(str(missing), cache_dir=cache) == missing  # a path: its own error when opened
    with pytest.raises(CheckpointError, match="no checkpoint in checkpoints/ or the Hugging Face cache"):
        resolve_checkpoint(None, folder=tmp_path / "empty", cache_dir=tmp_path / "no-cache")


def test_folder_variant_comes_from_configs_not_names(tmp_path, tiny_pipeline):
    folder = tmp_path / "svd_xt-looking-name"
    tiny_pipeline.save_pretrained(folder)
    assert inspect_checkpoint(folder).variant.name == "tiny"  # a tiny UNet, whatever the name says
    _set_config(folder, "unet", block_out_channels=[320, 640, 1280, 1280], num_frames=14)
    assert inspect_checkpoint(folder).variant.name == "svd"
    _set_config(folder, "unet", num_frames=25)
    assert inspect_checkpoint(folder).variant.name == "svd_xt"
    _set_config(folder, "vae", _class_name="AutoencoderKL")
    assert inspect_checkpoint(folder).variant.name == "svd_xt_image_decoder"
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"lacks unet/config\.json"):
        inspect_checkpoint(folder)


def test_cli_list_shows_the_hf_cache(fake_cache, tmp_path):
    cache, _, _ = fake_cache
    r = cli("list", tmp_path, env={"HF_HUB_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert re.search(r"stabilityai/stable-video-diffusion-img2vid-xt \(Hugging Face cache\)\s+tiny\s", r.stdout)
    assert "someone/svd-broken" in r.stdout and "sd15" not in r.stdout
