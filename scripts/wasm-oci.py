#!/usr/bin/env python3
"""Packages the filter module as a Wasm OCI image that Istio can pull
(WasmPlugin `url: oci://…`, or istio-agent for an EnvoyFilter ECDS resource),
without a Docker daemon.

Format: the "compat" variant of the Wasm image specification that Istio
reads — one gzip'd tar layer holding `plugin.wasm`, an OCI image config, an
OCI image manifest with the `module.wasm.image/variant: compat` annotation.
Written as an OCI image layout directory and as its tar (`oci-archive`),
byte-for-byte reproducible (fixed mtimes, sorted JSON). Push it with any OCI
tool, e.g. `skopeo copy oci-archive:target/oci/sluice-filter-0.1.0.tar
docker://REGISTRY/sluice/filter:0.1.0` or `oras cp --from-oci-layout ...`.

    python3 scripts/wasm-oci.py [--wasm PATH] [--tag 0.1.0] [--out target/oci]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "target/wasm32-wasip1/wasm/sluice_filter.wasm"

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar(wasm: bytes) -> tuple[bytes, bytes]:
    """(gzip'd tar, uncompressed tar) with plugin.wasm, reproducibly."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mtime, info.mode = len(wasm), 0, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        t.addfile(info, io.BytesIO(wasm))
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(raw.getvalue())
    return gz.getvalue(), raw.getvalue()


def build(wasm_path: Path, tag: str, out: Path) -> dict:
    wasm = wasm_path.read_bytes()
    layer, raw = layer_tar(wasm)
    config = canonical({
        "architecture": "wasm", "os": "wasip1",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [digest(raw)]},
    })
    manifest = canonical({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
        "annotations": {"module.wasm.image/variant": "compat",
                        "org.opencontainers.image.title": "sluice-filter",
                        "org.opencontainers.image.version": tag,
                        "org.opencontainers.image.description":
                            "Sluice LLM gateway filter (proxy-wasm, wasm32-wasip1)"},
    })
    index = canonical({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(manifest),
                       "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    })
    layout = out / f"sluice-filter-{tag}"
    if layout.exists():
        shutil.rmtree(layout)
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True)
    for b in (config, layer, manifest):
        (blobs / digest(b).split(":")[1]).write_bytes(b)
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(index)
    archive = out / f"sluice-filter-{tag}.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as t:
        for p in sorted(layout.rglob("*")):
            info = t.gettarinfo(str(p), arcname=str(p.relative_to(layout)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if p.is_file():
                with p.open("rb") as f:
                    t.addfile(info, f)
            else:
                t.addfile(info)
    return {"layout": str(layout), "archive": str(archive), "manifest_digest": digest(manifest),
            "wasm_sha256": hashlib.sha256(wasm).hexdigest(), "tag": tag}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--wasm", type=Path, default=WASM)
    p.add_argument("--tag", default="0.1.0")
    p.add_argument("--out", type=Path, default=ROOT / "target/oci")
    a = p.parse_args()
    if not a.wasm.exists():
        print(f"{a.wasm} missing: run `make wasm`", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    r = build(a.wasm, a.tag, a.out)
    print(f"OCI image layout: {r['layout']}\nOCI archive:      {r['archive']}\n"
          f"manifest digest:  {r['manifest_digest']}   (WasmPlugin url: oci://REGISTRY/sluice/"
          f"filter@{r['manifest_digest']})\nmodule sha256:    {r['wasm_sha256']}   "
          f"(https download: EnvoyFilter remote.sha256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
