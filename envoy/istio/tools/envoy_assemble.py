"""Assembles the Envoy configuration a proxy gets from istiod for the rendered
manifests — the listeners, routes and clusters istiod would generate from the
Gateway, VirtualServices, ServiceEntries and DestinationRules — and applies
the EnvoyFilter patches to it the way istiod does, so that
`envoy --mode validate` (and a live Envoy in the tests) can check what the
patches produce: a typo in a patch fails the build, not the mesh.

Only what these manifests use is implemented: CLUSTER ADD and MERGE (matched
by service and port), LISTENER MERGE, HTTP_FILTER
INSERT_BEFORE/INSERT_AFTER/INSERT_FIRST, NETWORK_FILTER MERGE and
EXTENSION_CONFIG ADD, matched by context, listener port, network filter and
HTTP sub-filter names. Anything else raises.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


class PatchError(Exception):
    pass


@dataclass
class Proxy:
    """A proxy's generated configuration before EnvoyFilters."""
    context: str  # GATEWAY or SIDECAR_OUTBOUND
    listeners: list = field(default_factory=list)
    clusters: list = field(default_factory=list)
    # ECDS resources added by EXTENSION_CONFIG patches (served by istiod).
    extension_configs: dict = field(default_factory=dict)


def _hcm(listener: dict) -> dict:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            if f["name"] == HCM:
                return f
    raise PatchError(f"listener {listener['name']} has no HTTP connection manager")


def _outbound(host: str, port: int) -> str:
    return f"outbound|{port}||{host}"


def _routes(vs_list: list, gateway: str | None) -> list:
    """Envoy routes for VirtualService HTTP routes (header matches)."""
    out = []
    for vs in vs_list:
        spec = vs["spec"]
        gws = spec.get("gateways", ["mesh"])
        if gateway is not None and gateway not in gws:
            continue
        if gateway is None and "mesh" not in gws:
            continue
        for r in spec.get("http", []):
            dest = r["route"][0]["destination"]
            route = {"cluster": _outbound(dest["host"], dest["port"]["number"])}
            if "timeout" in r:
                route["timeout"] = r["timeout"]
            for m in r.get("match", [{}]):
                headers = [{"name": k, "string_match": {"exact": v["exact"]}}
                           for k, v in m.get("headers", {}).items()]
                e = {"name": r.get("name", ""), "match": {"prefix": "/", "headers": headers},
                     "route": route}
                remove = r.get("headers", {}).get("request", {}).get("remove")
                if remove:
                    e["request_headers_to_remove"] = remove
                out.append(e)
    return out


def _clusters(objs: list) -> list:
    """Outbound clusters for ServiceEntries, TLS origination from
    DestinationRules."""
    tls = {}
    for dr in (o for o in objs if o["kind"] == "DestinationRule"):
        for pl in dr["spec"].get("trafficPolicy", {}).get("portLevelSettings", []):
            if pl.get("tls", {}).get("mode") == "SIMPLE":
                tls[(dr["spec"]["host"], pl["port"]["number"])] = pl["tls"].get("sni")
    out = []
    for se in (o for o in objs if o["kind"] == "ServiceEntry"):
        for host in se["spec"]["hosts"]:
            for p in se["spec"]["ports"]:
                name = _outbound(host, p["number"])
                addr = (se["spec"].get("endpoints") or [{"address": host}])[0]["address"]
                c = {"name": name, "type": "STRICT_DNS" if se["spec"]["resolution"] == "DNS"
                     else "STATIC", "connect_timeout": "10s",
                     "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                         {"endpoint": {"address": {"socket_address": {
                             "address": addr, "port_value": p.get("targetPort", p["number"])}}}}]}]}}
                sni = tls.get((host, p["number"]))
                if sni:
                    c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": sni}}
                out.append(c)
    return out


def generated(objs: list, context: str) -> Proxy:
    """What istiod would give an ingress gateway (port 80 → 8080) or a
    sidecar (outbound 0.0.0.0_80) for these objects."""
    gateways = [o for o in objs if o["kind"] == "Gateway"]
    vss = [o for o in objs if o["kind"] == "VirtualService"]
    if context == "GATEWAY":
        gw = gateways[0] if gateways else None
        gw_ref = f"{gw['metadata']['namespace']}/{gw['metadata']['name']}" if gw else "-"
        routes, port, name = _routes(vss, gw_ref), 8080, "0.0.0.0_8080"
    else:
        routes, port, name = _routes(vss, None), 80, "0.0.0.0_80"
    listener = {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": f"outbound_{name}",
            "route_config": {"name": str(port), "virtual_hosts": [
                {"name": "llm", "domains": ["*"], "routes": routes}]},
            "http_filters": [{"name": ROUTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }}]}],
    }
    return Proxy(context=context, listeners=[listener], clusters=_clusters(objs))


def _matches_listener(listener: dict, match: dict) -> bool:
    lm = match.get("listener")
    if not lm:
        return True
    unknown = set(lm) - {"portNumber", "filterChain"}
    if unknown:
        raise PatchError(f"unsupported listener match {sorted(unknown)}")
    if "portNumber" in lm and listener["address"]["socket_address"]["port_value"] != lm["portNumber"]:
        return False
    return True


def _merge(dst: dict, src: dict) -> None:
    """Proto-style merge: messages merge, repeated fields append, scalars
    replace."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            dst[k].extend(copy.deepcopy(v))
        else:
            dst[k] = copy.deepcopy(v)


def apply(proxy: Proxy, envoy_filters: list) -> Proxy:
    """Applies the EnvoyFilters' patches in order."""
    p = copy.deepcopy(proxy)
    for ef in envoy_filters:
        for cp in ef["spec"]["configPatches"]:
            match = cp.get("match", {})
            if match.get("context", "ANY") not in ("ANY", p.context):
                continue
            op, value, to = cp["patch"]["operation"], cp["patch"].get("value"), cp["applyTo"]
            if to == "CLUSTER" and op == "ADD":
                p.clusters.append(copy.deepcopy(value))
            elif to == "CLUSTER" and op == "MERGE":
                cm = match.get("cluster", {})
                unknown = set(cm) - {"service", "portNumber"}
                if unknown or "service" not in cm:
                    raise PatchError(f"unsupported cluster match {sorted(cm)}")
                name = _outbound(cm["service"], cm.get("portNumber", 80))
                targets = [c for c in p.clusters if c["name"] == name]
                if not targets:
                    raise PatchError(f"no cluster {name} to merge into")
                for c in targets:
                    _merge(c, value)
            elif to == "LISTENER" and op == "MERGE":
                if set(match.get("listener", {})) - {"portNumber"}:
                    raise PatchError("LISTENER MERGE matches by portNumber only here")
                for listener in p.listeners:
                    if _matches_listener(listener, match):
                        _merge(listener, value)
            elif to == "EXTENSION_CONFIG" and op == "ADD":
                p.extension_configs[value["name"]] = copy.deepcopy(value["typed_config"])
            elif to in ("HTTP_FILTER", "NETWORK_FILTER"):
                fc = match.get("listener", {}).get("filterChain", {}).get("filter", {})
                if fc.get("name") != HCM:
                    raise PatchError(f"{to} patches must match the HCM, got {fc}")
                for listener in p.listeners:
                    if not _matches_listener(listener, match):
                        continue
                    hcm = _hcm(listener)
                    if to == "NETWORK_FILTER":
                        if op != "MERGE":
                            raise PatchError(f"unsupported NETWORK_FILTER op {op}")
                        if value["typed_config"]["@type"] != hcm["typed_config"]["@type"]:
                            raise PatchError("MERGE with a different @type")
                        _merge(hcm["typed_config"], value["typed_config"])
                        continue
                    filters = hcm["typed_config"]["http_filters"]
                    sub = fc.get("subFilter", {}).get("name")
                    idx = next((i for i, f in enumerate(filters) if f["name"] == sub), None)
                    if op == "INSERT_FIRST":
                        filters.insert(0, copy.deepcopy(value))
                    elif idx is None:
                        raise PatchError(f"no http filter {sub} to insert next to")
                    elif op == "INSERT_BEFORE":
                        filters.insert(idx, copy.deepcopy(value))
                    elif op == "INSERT_AFTER":
                        filters.insert(idx + 1, copy.deepcopy(value))
                    else:
                        raise PatchError(f"unsupported HTTP_FILTER op {op}")
            else:
                raise PatchError(f"unsupported patch {to} {op}")
    return p


def bootstrap(p: Proxy, *, admin_port: int = 15000, inline_ecds: bool = False) -> dict:
    """An Envoy bootstrap with the proxy's listeners and clusters, an ADS
    source like istio-agent's (for `config_source: ads`), and optionally
    istiod's ECDS resources put in place of their `config_discovery`."""
    listeners = copy.deepcopy(p.listeners)
    if inline_ecds:
        for listener in listeners:
            for f in _hcm(listener)["typed_config"]["http_filters"]:
                cd = f.get("config_discovery")
                if cd and "ads" in cd["config_source"]:
                    f.pop("config_discovery")
                    f["typed_config"] = copy.deepcopy(p.extension_configs[f["name"]])
    return {
        "node": {"id": f"sluice-{p.context.lower()}", "cluster": "istio-ingressgateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "dynamic_resources": {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {
            "listeners": listeners,
            "clusters": copy.deepcopy(p.clusters) + [{
                "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": 15010}}}}]}]}}],
        },
    }
