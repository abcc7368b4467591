"""The Istio/Kubernetes manifests (envoy/istio), checked without a cluster:
rendered, schema-validated, the Envoy configuration their EnvoyFilters
produce validated by Envoy — and run in a real Envoy against the mock
provider and the control plane, with only addresses changed to loopback."""
from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "envoy/istio/tools"))
import envoy_assemble  # noqa: E402
import launch  # noqa: E402
import validate  # noqa: E402

KEY = "sk-sluice-example-change-me"  # the static example's key


@pytest.fixture(scope="module")
def tree():
    t = validate.staged_tree()
    yield t


@pytest.fixture(scope="module")
def rendered(tree):
    return validate.render_all(tree)


def by_kind(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def test_every_kustomization_renders_and_passes_its_schemas(rendered):
    assert set(rendered) == set(validate.OVERLAYS)
    for name, objs in rendered.items():
        assert validate.schema_errors(objs) == [], name
    ingress = rendered["overlays/ingress-gateway"]
    for kind in ("Namespace", "ServiceAccount", "PersistentVolumeClaim", "Secret", "ConfigMap",
                 "Deployment", "Service", "EnvoyFilter", "Gateway", "VirtualService",
                 "ServiceEntry", "DestinationRule"):
        assert by_kind(ingress, kind), kind
    dep = by_kind(ingress, "Deployment")[0]
    assert dep["metadata"]["namespace"] == "sluice-system"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com/sluice/control-plane:0.1.0"
    assert by_kind(ingress, "EnvoyFilter")[0]["metadata"]["namespace"] == "istio-system"
    side = by_kind(rendered["overlays/sidecar"], "EnvoyFilter")[0]
    assert side["metadata"]["namespace"] == "llm-apps"
    assert {p["match"]["context"] for p in side["spec"]["configPatches"]} == {"SIDECAR_OUTBOUND"}


def test_schema_checks_catch_mistakes(rendered):
    objs = copy.deepcopy(rendered["overlays/ingress-gateway"])
    by_kind(objs, "EnvoyFilter")[0]["spec"]["configPatches"][0]["applyTo"] = "CLUSTERS"
    by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    by_kind(objs, "Service")[0]["spec"]["portz"] = []
    by_kind(objs, "Gateway")[0]["spec"]["servers"][0]["port"]["number"] = "eighty"
    errs = validate.schema_errors(objs)
    assert any("EnvoyFilter" in e and "applyTo" in e for e in errs), errs
    assert any("Deployment" in e for e in errs), errs
    assert any("portz" in e for e in errs), errs
    assert any("Gateway" in e for e in errs), errs


@pytest.mark.parametrize("name", [n for n, c in validate.OVERLAYS.items() if c])
def test_envoy_accepts_what_the_envoyfilters_produce(rendered, tree, name):
    objs = rendered[name]
    for label, boot in validate.envoy_configs(objs, validate.OVERLAYS[name]):
        ok, msg = validate.envoy_validate(boot, tree)
        assert ok, f"{name} ({label}): {msg}"
        hcm = envoy_assemble._hcm(boot["static_resources"]["listeners"][0])["typed_config"]
        names = [f["name"] for f in hcm["http_filters"]]
        # Sluice first; with global limits, Envoy's ratelimit filter after it
        # (it reads what Sluice sets), then the router.
        want = ["envoy.filters.http.ratelimit"] if "fleet" in name else []
        assert names[1:] == want + ["envoy.filters.http.router"], names


def test_a_typo_in_a_patch_fails_the_build(rendered, tree):
    objs = copy.deepcopy(rendered["overlays/ingress-gateway"])
    ef = by_kind(objs, "EnvoyFilter")[0]
    ef["spec"]["configPatches"][0]["patch"]["value"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {
        "http2_protocol_option": {}}
    (label, boot), = validate.envoy_configs(objs, "GATEWAY")
    ok, msg = validate.envoy_validate(boot, tree)
    assert not ok and "http2_protocol_option" in msg
    ef["spec"]["configPatches"][1]["match"]["listener"]["filterChain"]["filter"]["subFilter"][
        "name"] = "envoy.filters.http.routr"
    with pytest.raises(envoy_assemble.PatchError):
        validate.envoy_configs(objs, "GATEWAY")


def loopback(boot: dict, ports: dict[str, int], listen_port: int, admin_port: int,
             grpc_token: str | None = None) -> str:
    """The same configuration with addresses on 127.0.0.1: clusters named in
    `ports` (or the provider ones, to the mock) resolve to loopback, TLS to
    the providers is dropped (the mock speaks plain HTTP)."""
    b = copy.deepcopy(boot)
    b["admin"]["address"]["socket_address"]["port_value"] = admin_port
    b["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": listen_port}
    keep = []
    for c in b["static_resources"]["clusters"]:
        port = ports.get(c["name"]) or (ports["mock"] if c["name"].startswith("outbound|") else None)
        if port is None:
            continue  # istiod's xDS: nothing listens here
        c["type"] = "STATIC"
        c.pop("transport_socket", None)
        c["load_assignment"]["endpoints"] = [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": p}}}}
            for p in (port if isinstance(port, list) else [port])]}]
        keep.append(c)
    b["static_resources"]["clusters"] = keep
    b.pop("dynamic_resources")
    out = json.dumps(b)
    if grpc_token:
        out = out.replace("REPLACE-WITH-SLUICE_GRPC_TOKEN", grpc_token)
    return out


def k8s_seed(mock_keys: bool = True) -> dict:
    seed = json.loads((ROOT / "envoy/istio/common/seed-config.json").read_text())
    if mock_keys:
        for p in seed["providers"]:
            p["api_key_env"] = "SLUICE_MOCK_API_KEY"
    seed["keys"] = [{"id": "k", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]
    return seed


def ask(url: str, model: str, *, stream: bool = False,
        host: str = "llm.example.com") -> httpx.Response:
    with httpx.Client(timeout=20) as c:
        return c.post(url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {KEY}", "host": host},
                      json={"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}]})


def test_managed_ingress_gateway_configuration_serves_live(rendered, tmp_path):
    """What the managed EnvoyFilters produce, in a real Envoy: the module and
    its config from the control plane over ECDS, requests routed by the
    VirtualService's header matches, usage back over gRPC."""
    objs = rendered["overlays/ingress-gateway"]
    (_, boot), = validate.envoy_configs(objs, "GATEWAY")
    mock = launch.Mock(tmp_path)
    # The provider keys as in the cluster's Secret: served over SDS to the
    # credential_injector the EnvoyFilter puts on each provider's cluster
    # (the mock accepts one key, in each provider's header).
    keys = {k: launch.MOCK_PROVIDER_SECRET
            for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")}
    cp = launch.ControlPlane(tmp_path, seed=k8s_seed(mock_keys=False), wasm_inline=True,
                             provider_secrets=keys)
    envoy = None
    try:
        port, admin = launch.free_port(), launch.free_port()
        cfg = loopback(boot, {"mock": mock.port, "sluice_control_plane": cp.grpc_port},
                       port, admin, grpc_token=cp.grpc_token)
        envoy = launch.Envoy(tmp_path, cfg, admin_port=admin, name="istio-gateway")
        url = f"http://127.0.0.1:{port}"
        r = ask(url, "gpt-4o-mini")
        assert r.status_code == 200, r.text
        # Another application's host on the shared listener: Sluice stays
        # out of it (no 401); here no route serves it.
        other = ask(url, "gpt-4o-mini", host="shop.example.com")
        assert other.status_code == 404, other.text
        # Each provider got its own key, injected by Envoy; none of them is
        # in Envoy's config dump or the pushed filter config.
        with httpx.Client(timeout=10) as c:
            dump = c.get(f"http://127.0.0.1:{admin}/config_dump?include_eds").text
        for v in keys.values():
            assert v not in dump and v not in json.dumps(cp.api("GET", "/v1/config"))
        r = ask(url, "claude-haiku-4-5", stream=True)  # translated to Anthropic
        assert r.status_code == 200 and "data: [DONE]" in r.text, r.text
        seen = mock.requests()
        assert [s["path"] for s in seen[-2:]] == ["/v1/chat/completions", "/v1/messages"]
        assert all("x-sluice-cluster" not in s["headers"] for s in seen)
        assert seen[-1]["headers"]["host"] == "api.anthropic.com"
        assert seen[-1]["headers"]["x-api-key"] == keys["ANTHROPIC_API_KEY"]
        assert seen[-2]["headers"]["authorization"] == f"Bearer {keys['OPENAI_API_KEY']}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and cp.api("GET", "/v1/status")["ledger_rows"] < 2:
            time.sleep(0.1)
        assert cp.api("GET", "/v1/status")["ledger_rows"] == 2
    finally:
        if envoy:
            envoy.stop()
        cp.stop()
        mock.stop()


def test_static_ingress_gateway_configuration_serves_live(rendered, tmp_path):
    """The static EnvoyFilter's Wasm resource as istio-agent hands it to
    Envoy (ECDS inlined), with the module URL and SHA-256 set."""
    objs = copy.deepcopy(rendered["overlays/static-ingress-gateway"])
    wasm = launch.WASM.read_bytes()
    ext = by_kind(objs, "EnvoyFilter")[0]["spec"]["configPatches"][0]["patch"]["value"]
    remote = ext["typed_config"]["config"]["vm_config"]["code"]["remote"]
    remote["sha256"] = hashlib.sha256(wasm).hexdigest()
    boot = dict(validate.envoy_configs(objs, "GATEWAY"))["with istiod's ECDS resources inlined"]

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(launch.WASM.parent))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    remote_path = "/" + launch.WASM.name
    hcm = envoy_assemble._hcm(boot["static_resources"]["listeners"][0])["typed_config"]
    hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"][
        "uri"] = f"http://downloads.example.com{remote_path}"
    mock = launch.Mock(tmp_path)
    envoy = None
    try:
        port, admin = launch.free_port(), launch.free_port()
        cfg = loopback(boot, {"mock": mock.port, "sluice_module_download": files.server_port},
                       port, admin)
        keys = {k: launch.MOCK_PROVIDER_SECRET for k in
                ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")}
        envoy = launch.Envoy(tmp_path, cfg, admin_port=admin, name="istio-static", env=keys)
        url = f"http://127.0.0.1:{port}"
        r = ask(url, "gemini-2.5-flash")  # OpenAI client, Gemini provider
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion"
        assert mock.requests()[-1]["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
        assert ask(url, "no-such-model").status_code == 404
    finally:
        if envoy:
            envoy.stop()
        mock.stop()
        files.shutdown()


def test_static_example_config_is_a_valid_sluice_config(rendered):
    ef = by_kind(rendered["overlays/static-ingress-gateway"], "EnvoyFilter")[0]
    raw = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"][
        "configuration"]["value"]
    wp = by_kind(rendered["wasmplugin"], "WasmPlugin")[0]
    # The WasmPlugin carries the same configuration (as YAML).
    assert json.loads(raw) == wp["spec"]["pluginConfig"]





def test_wasm_oci_image_is_well_formed_and_reproducible(tmp_path):
    import importlib.util
    import tarfile
    spec = importlib.util.spec_from_file_location("wasm_oci", ROOT / "scripts/wasm-oci.py")
    oci = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oci)
    a = oci.build(launch.WASM, "9.9.9", tmp_path / "a")
    b = oci.build(launch.WASM, "9.9.9", tmp_path / "b")
    assert a["manifest_digest"] == b["manifest_digest"], "not reproducible"
    assert Path(a["archive"]).read_bytes() == Path(b["archive"]).read_bytes()
    layout = Path(a["layout"])
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    def blob(d: str) -> bytes:
        data = (layout / "blobs/sha256" / d.split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d
        return data

    index = json.loads((layout / "index.json").read_text())
    (m,) = index["manifests"]
    assert m["annotations"]["org.opencontainers.image.ref.name"] == "9.9.9"
    manifest = json.loads(blob(m["digest"]))
    assert len(blob(m["digest"])) == m["size"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    data = blob(layer["digest"])
    assert len(data) == layer["size"]
    import gzip
    import io
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as t:
        assert t.getnames() == ["plugin.wasm"]
        assert t.extractfile("plugin.wasm").read() == launch.WASM.read_bytes()
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(
        gzip.decompress(data)).hexdigest()]
    with tarfile.open(a["archive"]) as t:
        assert {"oci-layout", "index.json"} <= set(t.getnames())


def test_control_plane_image_matches_the_deployment(rendered):
    """The Dockerfile puts the binary and the module where the Deployment
    and the manifests expect them, as the user the pod runs as."""
    text = (ROOT / "control-plane/Dockerfile").read_text()
    dep = by_kind(rendered["overlays/ingress-gateway"], "Deployment")[0]["spec"]["template"]["spec"]
    args = dep["containers"][0]["args"]
    wasm_file = next(a.split("=", 1)[1] for a in args if a.startswith("--wasm-file="))
    assert f"sluice_filter.wasm {wasm_file}" in text
    assert "/usr/local/bin/sluice" in text and 'ENTRYPOINT ["/usr/local/bin/sluice"]' in text
    assert f"USER {dep['securityContext']['runAsUser']}" in text
    assert "-p sluice-control-plane" in text and "-p sluice-filter" in text
    # The build outputs the Dockerfile copies are the ones `make build` makes.
    assert "target/release/sluice " in text and str(launch.WASM.relative_to(ROOT)) in text
    for port in dep["containers"][0]["ports"]:
        assert str(port["containerPort"]) in text


def test_fleet_overlay_runs_replicas_with_a_disruption_budget(rendered):
    """Two control-plane replicas on Postgres with a PodDisruptionBudget,
    Postgres and Redis (bundled, replaceable by managed ones), and the
    proxies' side: every usage record to each replica by name, Envoy's
    ratelimit filter after Sluice with the same config the e2e tests run."""
    objs = rendered["overlays/fleet-ingress-gateway"]
    assert not by_kind(objs, "Deployment") and not by_kind(objs, "PersistentVolumeClaim")
    cp = by_kind(objs, "StatefulSet", "sluice-control-plane")[0]
    assert cp["spec"]["replicas"] == 2
    assert cp["spec"]["serviceName"] == "sluice-control-plane-pods"
    pods = by_kind(objs, "Service", "sluice-control-plane-pods")[0]
    assert pods["spec"]["clusterIP"] == "None"
    pdb = by_kind(objs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == cp["spec"]["selector"]["matchLabels"]
    c = cp["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "sluice-fleet"}} in c["envFrom"]
    assert not any(a.startswith(("--db", "--capture-dir")) for a in c["args"])
    secret = by_kind(objs, "Secret", "sluice-fleet")[0]
    assert {"SLUICE_DB", "SLUICE_REDIS_URL", "POSTGRES_PASSWORD"} <= set(secret["data"])
    assert by_kind(objs, "StatefulSet", "sluice-postgres") and by_kind(objs, "StatefulSet",
                                                                        "sluice-redis")
    policies = {p["metadata"]["name"] for p in by_kind(objs, "NetworkPolicy")}
    assert {"sluice-control-plane", "sluice-postgres", "sluice-redis"} <= policies
    # The proxies' side.
    patches = by_kind(objs, "EnvoyFilter", "sluice")[0]["spec"]["configPatches"]
    added = [p["patch"]["value"]["name"] for p in patches
             if p["applyTo"] == "CLUSTER" and p["patch"]["operation"] == "ADD"]
    assert added == ["sluice_control_plane", "sluice_control_plane_0", "sluice_control_plane_1"]
    logs = patches[2]["patch"]["value"]["typed_config"]["access_log"]
    assert [l["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
            for l in logs] == ["sluice_control_plane_0", "sluice_control_plane_1"]
    rl = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"
          and p["patch"]["value"]["name"] == "envoy.filters.http.ratelimit"]
    assert rl == [launch.ratelimit_filter("REPLACE-WITH-SLUICE_GRPC_TOKEN")]


def test_fleet_ingress_gateway_configuration_serves_live(rendered, tmp_path):
    """What the fleet overlay's EnvoyFilter produces, in a real Envoy, with
    two control planes on a real Postgres and the rate limit service on a
    real Redis: requests served, limits counted by the service, every usage
    record in the ledger once although both replicas receive it — and still
    so after one replica is killed."""
    objs = rendered["overlays/fleet-ingress-gateway"]
    (_, boot), = validate.envoy_configs(objs, "GATEWAY")
    mock = launch.Mock(tmp_path)
    pg = launch.Postgres()
    redis = launch.Redis(tmp_path)
    keys = {k: launch.MOCK_PROVIDER_SECRET
            for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")}
    seed = k8s_seed(mock_keys=False)
    seed["keys"][0]["limits"] = {"rpm": 1000}  # counted by the service
    token = "fleet-manifests-" + "t" * 16
    cps, envoy = [], None
    try:
        cps = [launch.ControlPlane(tmp_path, seed=seed, wasm_inline=True, provider_secrets=keys,
                                   db=pg.url, redis_url=redis.url, grpc_token=token,
                                   name=f"cp-{i}") for i in range(2)]
        port, admin = launch.free_port(), launch.free_port()
        cfg = loopback(boot, {"mock": mock.port,
                              "sluice_control_plane": [c.grpc_port for c in cps],
                              "sluice_control_plane_0": cps[0].grpc_port,
                              "sluice_control_plane_1": cps[1].grpc_port},
                       port, admin, grpc_token=token)
        envoy = launch.Envoy(tmp_path, cfg, admin_port=admin, name="istio-fleet")
        url = f"http://127.0.0.1:{port}"

        def stat(name):
            with httpx.Client(timeout=5) as c:
                text = c.get(f"http://127.0.0.1:{admin}/stats").text
            return sum(int(v) for k, _, v in (l.partition(": ") for l in text.splitlines())
                       if k.endswith(name) and v.strip().isdigit())

        def ledger():
            return cps[1].api("GET", "/v1/status")["ledger_rows"]

        for _ in range(3):
            r = ask(url, "gpt-4o-mini")
            assert r.status_code == 200, r.text
        assert stat("ratelimit.ok") >= 3, "the rate limit service counted the key"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and ledger() < 3:
            time.sleep(0.1)
        cps[0].kill()
        for _ in range(3):
            assert ask(url, "gpt-4o-mini", stream=True).status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and ledger() < 6:
            time.sleep(0.1)
        time.sleep(0.5)
        assert ledger() == 6, "each request once, none lost with the killed replica"
    finally:
        if envoy:
            envoy.stop()
        for c in cps:
            if c.proc.poll() is None:
                c.stop()
        redis.stop()
        pg.remove()
        mock.stop()
