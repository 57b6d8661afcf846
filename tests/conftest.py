"""Shared fixtures: checkpoints regenerated from vendored manifests, a tiny model, its sampler."""

import hashlib
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from .helpers import SMALL  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
# Every fixture set computed with Stability's code (a folder with reference.json): drop another one in to test it.
REFERENCE_SETS = tuple(sorted(p.name for p in FIXTURES.iterdir() if (p / "reference.json").is_file()))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def regenerate(fixture: str, dest: Path) -> Path:
    """Rebuild a reference checkpoint bit for bit from its weights manifest (the 28 MB file is not vendored);
    a fixture set that ships its sgm_checkpoint.safetensors is used as it is."""
    from svd_core.tiny import write_from_recipe

    shipped = FIXTURES / fixture / "sgm_checkpoint.safetensors"
    if shipped.is_file():
        return shipped
    manifest = json.loads((FIXTURES / fixture / "weights_manifest.json").read_text())["weights"]
    path = write_from_recipe([(k, v["shape"], v["seed"], v["kind"], v["mean"], v["std"])
                              for k, v in manifest.items()], dest / f"{fixture}.safetensors")
    want = json.loads((FIXTURES / fixture / "reference.json").read_text())["sha256"]["sgm_checkpoint.safetensors"]
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    assert got == want, f"regenerated {fixture} checkpoint differs from the reference ({got})"
    return path


@pytest.fixture(scope="session", autouse=True)
def studio_cache(tmp_path_factory) -> Path:
    """The studio's cache folder (checkpoints.cache_dir), one per test session: never the user's."""
    folder = tmp_path_factory.mktemp("svd-studio-cache")
    os.environ["SVD_STUDIO_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def reference_checkpoints(tmp_path_factory) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("reference")
    return {name: regenerate(name, dest) for name in REFERENCE_SETS}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from svd_core import make_tiny

    return make_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", seed=1)


@pytest.fixture(scope="session")
def tiny_sampler(tiny_checkpoint):
    from svd_core import Sampler

    return Sampler(tiny_checkpoint, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def input_png() -> Path:
    return FIXTURES / "A" / "input_image.png"


@pytest.fixture(scope="session")
def large_png() -> Path:
    return FIXTURES / "A" / "input_image_large.png"


@pytest.fixture(scope="session")
def base(tiny_sampler):
    """The tiny model's defaults at the SMALL size (a test file may define its own)."""
    return tiny_sampler.default_params(**SMALL)


def pytest_collection_modifyitems(items):
    """A browser test starts a Streamlit server and Chromium: it is slow by nature, and `make quick` leaves it out."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)


from .apptest import dirs, fresh_server, with_tiny  # noqa: E402, F401  (the AppTest files' fixtures)
