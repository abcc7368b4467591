"""Renders the kustomizations under envoy/istio/ without a kustomize binary
(none can be installed here): the subset of kustomize these manifests use —
`resources` (files and directories), `namespace`, `configMapGenerator` and
`secretGenerator` (`files`, `envs`, `literals`, with
`disableNameSuffixHash: true`), `images` and JSON6902 `patches` with a
`target`. Any other field is an error, so a manifest cannot silently rely on
something this renderer ignores; `kubectl apply -k` renders the same objects.
"""
from __future__ import annotations

import base64
import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator",
             "secretGenerator", "images", "patches"}
# Kinds without a namespace (kustomize's namespace transformer skips them).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class RenderError(Exception):
    pass


def _load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _generator(spec: dict, base: Path, kind: str) -> dict:
    opts = spec.get("options", {})
    if not opts.get("disableNameSuffixHash"):
        raise RenderError(f"{base}: {kind} generator '{spec['name']}' needs "
                          "options.disableNameSuffixHash (name hashing is not rendered here)")
    unknown = set(spec) - {"name", "files", "envs", "literals", "options", "type"}
    if unknown:
        raise RenderError(f"{base}: unsupported generator fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for f in spec.get("files", []):
        key, _, name = f.partition("=") if "=" in f else (Path(f).name, "", f)
        data[key] = (base / (name or f)).read_text()
    for e in spec.get("envs", []):
        p = base / e
        if not p.exists():
            raise RenderError(f"{p} is missing (copy {p.name}.example)")
        for line in p.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                data[k.strip()] = v
    for lit in spec.get("literals", []):
        k, _, v = lit.partition("=")
        data[k] = v
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def _pointer(obj, path: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for p in parts[:-1]:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    return obj, parts[-1]


def _json6902(obj: dict, ops: list[dict]) -> None:
    for op in ops:
        parent, key = _pointer(obj, op["path"])
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if key == "-" else int(key)
            if kind == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[idx] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[idx]
            else:
                raise RenderError(f"unsupported patch op {kind}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and key not in parent:
                    raise RenderError(f"replace of missing path {op['path']}")
                parent[key] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[key]
            else:
                raise RenderError(f"unsupported patch op {kind}")


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` would produce."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise RenderError(f"{kfile}: unsupported fields {sorted(unknown)}")
    objs: list[dict] = []
    for r in k.get("resources", []):
        p = directory / r
        objs += render(p) if p.is_dir() else _load_docs(p)
    own = []
    for g in k.get("configMapGenerator", []):
        own.append(_generator(g, directory, "ConfigMap"))
    for g in k.get("secretGenerator", []):
        own.append(_generator(g, directory, "Secret"))
    objs += own
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for o in objs:
            spec = o.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    for p in k.get("patches", []):
        target = p.get("target") or {}
        ops = yaml.safe_load(p["patch"]) if isinstance(p.get("patch"), str) else None
        if not isinstance(ops, list):
            raise RenderError(f"{kfile}: only JSON6902 patches (a list of ops) are rendered")
        hits = [o for o in objs
                if all(o.get(f) == target[f] for f in ("kind",) if f in target)
                and ("name" not in target or o["metadata"]["name"] == target["name"])]
        if not hits:
            raise RenderError(f"{kfile}: patch target {target} matches nothing")
        for o in hits:
            _json6902(o, ops)
    return objs


def main() -> None:
    import sys
    for o in render(Path(sys.argv[1])):
        print("---")
        print(yaml.safe_dump(o, sort_keys=False), end="")


if __name__ == "__main__":
    main()


__all__ = ["render", "RenderError"]
