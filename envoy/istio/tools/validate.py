#!/usr/bin/env python3
"""Validates the Istio/Kubernetes manifests under envoy/istio without a
cluster (`make istio-validate`, and tests/istio):

1. renders every kustomization (tools/kustomize_lite.py);
2. checks every object against its schema: Kubernetes kinds with
   kubernetes-validate (strict: unknown fields are errors), Istio kinds with
   the schemas generated from Istio's CRDs (@kubernetes-models/istio, node);
3. assembles the Envoy configuration the EnvoyFilters produce on top of what
   istiod generates for the Gateway/VirtualServices/ServiceEntries, and runs
   `envoy --mode validate` on it (with istiod's ECDS resources inlined too).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


TOOLS = Path(__file__).resolve().parent
ISTIO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import envoy_assemble  # noqa: E402
import kustomize_lite  # noqa: E402

# Kustomizations and the proxy context their EnvoyFilters target.
OVERLAYS = {
    "overlays/ingress-gateway": "GATEWAY",
    "overlays/fleet-ingress-gateway": "GATEWAY",
    "overlays/static-ingress-gateway": "GATEWAY",
    "overlays/sidecar": "SIDECAR_OUTBOUND",
    "wasmplugin": None,
}
K8S_VERSION = "1.33"


def staged_tree() -> Path:
    """A copy of envoy/istio with secrets.env from the example (the real
    one is the operator's and never committed)."""
    tmp = Path(tempfile.mkdtemp(prefix="sluice-istio-"))
    dst = tmp / "istio"
    shutil.copytree(ISTIO, dst, ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    for example in dst.glob("**/secrets.env.example"):
        env = example.with_name("secrets.env")
        if not env.exists():
            shutil.copy(example, env)
    return dst


def render_all(tree: Path) -> dict[str, list[dict]]:
    return {name: kustomize_lite.render(tree / name) for name in OVERLAYS}


def is_istio(o: dict) -> bool:
    return o["apiVersion"].split("/")[0].endswith("istio.io")


def schema_errors(objs: list[dict]) -> list[str]:
    import kubernetes_validate as kv
    errors = []
    for o in objs:
        if is_istio(o):
            continue
        try:
            kv.validate(o, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{o['kind']} {o['metadata'].get('name')}: {e.message} "
                          f"at {'/'.join(map(str, e.path))}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            errors.append(f"{o['kind']} {o['metadata'].get('name')}: {e}")
    istio = [o for o in objs if is_istio(o)]
    if istio:
        node = shutil.which("node") or "node"
        p = subprocess.run([node, str(TOOLS / "validate-istio.mjs")], input=json.dumps(istio),
                           capture_output=True, text=True, cwd=TOOLS, timeout=120)
        if p.returncode not in (0, 1):
            errors.append(f"istio schema check failed to run: {p.stderr.strip()[-400:]}")
        errors += [line for line in p.stdout.splitlines() if line.strip()]
    return errors


def envoy_configs(objs: list[dict], context: str) -> list[tuple[str, dict]]:
    """(label, bootstrap) pairs for what the proxy would run."""
    efs = [o for o in objs if o["kind"] == "EnvoyFilter"]
    proxy = envoy_assemble.apply(envoy_assemble.generated(objs, context), efs)
    out = [("as delivered", envoy_assemble.bootstrap(proxy))]
    if proxy.extension_configs:
        out.append(("with istiod's ECDS resources inlined",
                    envoy_assemble.bootstrap(proxy, inline_ecds=True)))
    return out


def envoy_validate(boot: dict, workdir: Path, base_id: int = 4242) -> tuple[bool, str]:
    f = workdir / "bootstrap.json"
    f.write_text(json.dumps(boot))
    envoy = shutil.which("envoy") or "envoy"
    p = subprocess.run([envoy, "--mode", "validate", "-c", str(f), "--base-id", str(base_id),
                        "--log-level", "error"], capture_output=True, text=True, timeout=120)
    text = (p.stdout + p.stderr).strip()
    return p.returncode == 0, text.splitlines()[-1] if text else ""


def main() -> int:
    tree = staged_tree()
    failed = 0
    for name, objs in render_all(tree).items():
        errs = schema_errors(objs)
        kinds = sorted({o["kind"] for o in objs})
        print(f"{name}: {len(objs)} objects ({', '.join(kinds)}): "
              f"{'schema OK' if not errs else f'{len(errs)} schema errors'}")
        for e in errs:
            print(f"  - {e}")
        failed += len(errs)
        context = OVERLAYS[name]
        if context is None:
            continue
        for label, boot in envoy_configs(objs, context):
            ok, msg = envoy_validate(boot, tree)
            print(f"  envoy --mode validate ({context}, {label}): {'OK' if ok else msg}")
            failed += 0 if ok else 1
    shutil.rmtree(tree.parent, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

