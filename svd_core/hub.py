"""Download Stability's SVD releases from the Hugging Face Hub into the checkpoint folder.

    path = download("svd_xt", on_progress=lambda done, total: ..., should_stop=lambda: cancelled)

huggingface_hub does the talking: `hf_hub_url` + `get_hf_file_metadata` (size, the LFS sha256, redirects, the
token the user already has from `hf auth login` / HF_TOKEN, its error classes) and `http_get` (streaming, Range
resume, retries when the connection drops). What is ours, and why:
- the partial file lives in the checkpoint folder under a hidden name, `.svd_xt.safetensors.<sha256[:12]>.incomplete`,
  and a later call resumes it: `hf_hub_download` (2.x) writes to a per-process temporary name and deletes it on any
  failure, so a cancelled or killed 9.56 GB download would start again from zero;
- the sha256 is computed while the bytes arrive and checked against the hub's LFS oid before the file gets its real
  name (`hf_hub_download` checks the size only); a mismatch deletes the partial file;
- progress and cancel cross as plain callables through a silent tqdm class (`http_get`'s only progress hook);
- one clear line per failure (DownloadError), never the token.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from .checkpoints import (
    _size,
    checkpoint_dir,
    get_variant,
    list_variants,
    read_safetensors_header,
    remember_sha256,
)
from .errors import Cancelled, CheckpointError, DownloadError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DISK_MARGIN = 200 * 1024 * 1024  # keep this much free beyond the file
TOKEN_PAGE = "https://huggingface.co/settings/tokens"


def downloadable() -> list[str]:
    """Variants with a release on the hub."""
    return [n for n in list_variants() if get_variant(n).repo_id]


def _release(variant: str):
    if variant not in downloadable():
        raise ValueError(f"{variant!r} is not a release on the Hugging Face Hub; downloadable: "
                         f"{', '.join(downloadable())}")
    return get_variant(variant)


def partial_path(variant: str, folder=None, sha256: str = "") -> Path:
    """Where the unfinished download of `variant` is kept (hidden, never *.safetensors)."""
    v = _release(variant)
    return Path(folder or checkpoint_dir()) / f".{v.filename}.{sha256[:12]}.incomplete"


def partial_downloads(variant: str, folder=None) -> list[Path]:
    v = _release(variant)
    folder = Path(folder or checkpoint_dir())
    return sorted(folder.glob(f".{v.filename}.*.incomplete")) if folder.is_dir() else []


def discard_partial(variant: str, folder=None) -> int:
    """Delete the unfinished downloads of `variant`; returns the bytes freed."""
    freed = 0
    for p in partial_downloads(variant, folder):
        freed += p.stat().st_size
        p.unlink(missing_ok=True)
    return freed


def download(variant: str, *, folder=None, token: str | bool | None = None,
             on_progress: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Path:
    """Download the release `variant` (svd, svd_image_decoder, svd_xt, svd_xt_image_decoder, svd_xt_1_1) into
    `folder` (default checkpoints/ or $SVD_CHECKPOINT_DIR) and return its path.

    token: a Hugging Face token; None uses the one the user has (HF_TOKEN, `hf auth login`); it is sent to the hub
    only, never written anywhere. on_progress(done_bytes, total_bytes) is called as data arrives (done includes a
    resumed part); should_stop() is polled as often and makes the download raise Cancelled, keeping the partial
    file (hidden name) for the next call to resume. The file gets its real name only once complete and equal to the
    hub's sha256. A file already there is returned as it is (if its header is sound) without asking the hub.
    Raises DownloadError with one line for: licence not accepted (gated repo), token refused, file not found,
    no network, not enough disk space, a checksum mismatch.
    """
    from huggingface_hub import constants

    v = _release(variant)
    token = None if token == "" else token  # an empty token field means "the one I have", not "none"
    folder = Path(folder or checkpoint_dir())
    dest = folder / v.filename
    if dest.exists():
        try:
            read_safetensors_header(dest)
        except CheckpointError as e:
            raise DownloadError(f"{dest} is already there but unusable ({e}): delete it and download again") from None
        return dest
    if constants.is_offline_mode():
        raise DownloadError("HF_HUB_OFFLINE is set: unset it to download from the Hugging Face Hub")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the checkpoint folder {folder}: {e.strerror or e}") from None

    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / f".{v.filename}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DownloadError(f"{v.filename} is already being downloaded into {folder} (another session or "
                            "process): wait for it to finish") from None
    try:
        return _download_locked(v, folder, dest, token, on_progress, should_stop)
    finally:  # the lock file goes while still held: checkpoints/ keeps no hidden leftovers but a resumable part
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


def _download_locked(v, folder: Path, dest: Path, token, on_progress, should_stop) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if dest.exists():  # finished by whoever held the lock before us
        return dest
    url = hf_hub_url(v.repo_id, v.filename)
    try:
        meta = get_hf_file_metadata(url, token=token)  # no retries: no network fails in a second
    except Exception as e:  # noqa: BLE001 - translated below, re-raised when unknown
        raise _explain(e, v, url) from None
    sha = (meta.etag or "").lower()
    if not SHA256.match(sha) or not meta.size:
        raise DownloadError(f"the hub gave no sha256/size for {v.filename} in {v.repo_id} (etag {meta.etag!r}): "
                            "it cannot be verified, so it is not downloaded")
    size = meta.size

    partial = partial_path(v.name, folder, sha)
    for stale in partial_downloads(v.name, folder):  # an older upstream version of the file
        if stale != partial:
            stale.unlink(missing_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    free = shutil.disk_usage(folder).free
    if free < size - have + DISK_MARGIN:
        raise DownloadError(f"not enough disk space in {folder}: {v.filename} needs {_size(size - have)} more, "
                            f"{_size(free)} free; free some space or download into another folder "
                            "(--dir / SVD_CHECKPOINT_DIR)")

    headers = _headers(token, url, meta.location)
    try:
        digest = _fetch(meta.location, partial, have, size, headers, on_progress, should_stop)
    except Cancelled:
        raise Cancelled(f"download of {v.filename} cancelled; {_size(_size_of(partial))} kept as {partial.name} "
                        "(hidden): download again to resume") from None
    except Exception as e:  # noqa: BLE001
        raise _explain(e, v, url, partial) from None
    if digest != sha:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{v.filename} from {v.repo_id} does not match the hub's sha256 (got {digest[:12]}..., "
                            f"expected {sha[:12]}...): the copy was corrupted in transit and was deleted; "
                            "download again")
    os.replace(partial, dest)
    remember_sha256(dest, sha)
    return dest


def _size_of(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def _headers(token, url: str, location: str) -> dict:
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=token)
    if urlparse(location).netloc != urlparse(url).netloc:  # a signed CDN url: never send the token there
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    return headers


class _HashingWriter:
    """The partial file, hashed as http_get writes it. http_get rewinds and truncates when a server ignores the
    Range header (200 instead of 206): then the hash starts again from the bytes left in the file."""

    def __init__(self, f, have: int):
        self.f, self.sha = f, hashlib.sha256()
        f.seek(0)
        self._absorb(have)

    def _absorb(self, upto: int):
        self.f.seek(0)
        left = upto
        while left:
            block = self.f.read(min(left, 1 << 24))
            if not block:
                break
            self.sha.update(block)
            left -= len(block)
        self.f.seek(upto)

    def write(self, data):
        self.sha.update(data)
        return self.f.write(data)

    def tell(self):
        return self.f.tell()

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def truncate(self, pos=None):
        pos = self.f.tell() if pos is None else pos
        r = self.f.truncate(pos)
        self.sha = hashlib.sha256()
        self._absorb(pos)
        return r

    def flush(self):
        return self.f.flush()


def _progress_class(start: int, on_progress, should_stop):
    """A silent tqdm for http_get: it reports bytes to on_progress and raises Cancelled when should_stop()."""
    from tqdm.auto import tqdm

    class Hooks(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size = kwargs.get("initial") or start, kwargs.get("total") or 0

        def update(self, n=1):
            if should_stop is not None and should_stop():
                raise Cancelled("download cancelled")
            self.done += n
            if on_progress is not None:
                on_progress(self.done, self.size)

    return Hooks


def _fetch(location: str, partial: Path, have: int, size: int, headers: dict, on_progress, should_stop) -> str:
    from huggingface_hub.file_download import http_get

    if should_stop is not None and should_stop():
        raise Cancelled("download cancelled")
    if on_progress is not None:
        on_progress(have, size)
    mode = "r+b" if partial.exists() else "w+b"
    with open(partial, mode) as f:
        writer = _HashingWriter(f, have)
        if have < size:
            http_get(location, writer, resume_size=have, headers=headers, expected_size=size,
                     displayed_filename=partial.name, tqdm_class=_progress_class(have, on_progress, should_stop))
        f.flush()
        os.fsync(f.fileno())
        if f.tell() != size:
            raise DownloadError(f"{partial.name} has {f.tell()} bytes after the download, expected {size}: "
                                "download again")
    return writer.sha.hexdigest()


def _explain(e: Exception, v, url: str, partial: Path | None = None) -> Exception:
    """One line for each way a download fails; unknown errors pass through unchanged."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(e, (DownloadError, Cancelled)):
        return e
    page = f"{constants.ENDPOINT}/{v.repo_id}"
    status = getattr(getattr(e, "response", None), "status_code", None)
    kept = (f"; {_size(_size_of(partial))} kept as {partial.name} for resume"
            if partial is not None and _size_of(partial) else "")
    if isinstance(e, GatedRepoError):
        if status == 401:
            return DownloadError(f"{v.repo_id} is gated and no Hugging Face token was accepted: log in "
                                 f"(`hf auth login`, HF_TOKEN or --token) with an account that accepted the "
                                 f"licence at {page}")
        return DownloadError(f"your Hugging Face account has not accepted the licence of {v.repo_id}: accept it at "
                             f"{page} (logged in), then download again")
    if isinstance(e, OfflineModeIsEnabled):
        return DownloadError("HF_HUB_OFFLINE is set: unset it to download from the Hugging Face Hub")
    if isinstance(e, HfHubHTTPError) and status == 401 and not isinstance(e, RepositoryNotFoundError):
        return DownloadError(f"the Hugging Face token was refused (401 Unauthorized): check it or make a new one at "
                             f"{TOKEN_PAGE}, then `hf auth login` or --token")
    if isinstance(e, RepositoryNotFoundError):
        return DownloadError(f"{v.repo_id} was not found or is not visible to this token ({status}): check the "
                             f"token (`hf auth login`, HF_TOKEN or --token) and open {page}")
    if isinstance(e, EntryNotFoundError) or status == 404:
        return DownloadError(f"{v.filename} was not found in {v.repo_id} (404): the release may have moved; see "
                             f"{page}")
    if isinstance(e, HfHubHTTPError) and status == 403:
        return DownloadError(f"access to {v.filename} in {v.repo_id} was refused (403): accept the licence at {page} "
                             "and check the token's permissions (read access to gated repos)")
    if isinstance(e, HfHubHTTPError) and status == 416:
        return DownloadError(f"the hub refused to resume {v.filename} (416): delete the hidden partial file and "
                             "download again")
    if isinstance(e, HfHubHTTPError):
        return DownloadError(f"the Hugging Face Hub answered {status} for {v.filename}: try again later{kept}")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return DownloadError(f"the disk of {partial.parent if partial else 'the checkpoint folder'} is full: free "
                             f"some space and download again to resume{kept}")
    if isinstance(e, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return DownloadError(f"cannot reach the Hugging Face Hub ({urlparse(url).netloc}): check the network "
                             f"connection or proxy{kept}")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return DownloadError(f"the connection ended before {v.filename} was complete: download again to "
                             f"resume{kept}")
    return e
