"""The output of a pull of the demo, stored as a digest: a change to what e6ingest writes
(member names and order, JSON records, captions, the manifest's config and counts) shows
here, so that no refactoring changes the output unnoticed. Image bytes are left out of
the digest (they depend on the libwebp release Pillow bundles); their sizes are in the
JSON records, which are in it.

The pull runs once with each image backend (the backend is in the manifest's config, so
the digests differ by it alone).

When the output changes on purpose, the failure prints the new digest to store."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

DEMO_DIGEST = {
    "pillow": "678262313c8f680094816e8e134b95be35ab7149934dc1fe41124e929fc71cf4",
    "vips": "c16c4bf9fb0a9ff32d96ea9f04218d46b0f6bfdc0120060a1c442bbdc01cef34",
}


def output_digest(out: Path) -> str:
    """The digest of an output folder's shards (every member's name; every member's bytes
    but the images') and its manifest's config, counts and per-shard sample counts."""
    digest = hashlib.sha256()
    for path in sorted((out / "shards").glob("*.tar")):
        digest.update(path.name.encode())
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                digest.update(member.name.encode())
                if not member.name.endswith(".webp"):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    digest.update(hashlib.sha256(data).digest())
    manifest = json.loads((out / "manifest.json").read_text())
    kept = {k: manifest[k] for k in ("format_version", "config")}
    kept["totals"] = {k: v for k, v in manifest["totals"].items() if k != "bytes"}
    kept["shards"] = [(s["name"], s["samples"]) for s in manifest["shards"]]
    digest.update(json.dumps(kept, sort_keys=True).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("backend", ["pillow", pytest.param("vips", marks=pytest.mark.vips)])
def test_the_demo_pull_writes_what_it_wrote_before(backend, small_demo, tmp_path):
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    if backend == "vips":
        pytest.importorskip("pyvips", reason='the vips extra: pip install "e6ingest[vips]"')
    config = make_config({"ratings": "e,q,s", "shard_size": 20, "image": {"backend": backend}})
    pull(config, tmp_path / "out", small_demo, workers=1)
    digest = output_digest(tmp_path / "out")
    assert digest == DEMO_DIGEST[backend], (
        f"the demo's output changed; if on purpose, set DEMO_DIGEST[{backend!r}] = {digest!r}"
    )
