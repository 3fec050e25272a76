"""The output of a pull of the demo, stored as a digest: a change to what e6ingest writes
(member names and order, JSON records, captions, the manifest's config and counts) shows
here, so that no refactoring changes the output unnoticed. Image bytes are left out of
the digest (they depend on the libwebp release Pillow bundles); their sizes are in the
JSON records, which are in it.

When the output changes on purpose, the failure prints the new digest to store."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

DEMO_DIGEST = "a9fe58f440f01e9b4007ce64d4882365b70cdb2f8a1875a40d9b8733ea7c05b8"


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


def test_the_demo_pull_writes_what_it_wrote_before(small_pull):
    digest = output_digest(small_pull)
    assert digest == DEMO_DIGEST, (
        f"the demo's output changed; if on purpose, set DEMO_DIGEST = {digest!r}"
    )
