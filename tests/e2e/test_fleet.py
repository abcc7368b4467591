"""Global rate limits across Envoys: two Envoys with Sluice, one control
plane serving Envoy's rate limit service API with the counters in a real
redis-server (control-plane/src/ratelimit.rs, docs/fleet.md)."""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

import launch
from conftest import gateway_config, sha, wait_for

RPM_KEY, TPM_KEY, FREE_KEY = "sk-fleet-rpm", "sk-fleet-tpm", "sk-fleet-free"
ROOMY_KEY = "sk-fleet-roomy"


def away_from_minute_boundary():
    """Windows are fixed minutes: start where one cannot turn over mid-test."""
    while time.time() % 60 > 40:
        time.sleep(0.5)


class Fleet:
    def __init__(self, workdir):
        cfg = gateway_config()
        cfg["keys"] += [
            {"id": "fleet-rpm", "sha256": sha(RPM_KEY), "limits": {"rpm": 10}},
            {"id": "fleet-tpm", "sha256": sha(TPM_KEY), "limits": {"tpm": 60}},
            {"id": "fleet-free", "sha256": sha(FREE_KEY)},
            {"id": "fleet-roomy", "sha256": sha(ROOMY_KEY), "limits": {"rpm": 1000}},
        ]
        self.workdir = workdir
        self.redis = launch.Redis(workdir)
        self.mock = launch.Mock(workdir)
        self.cp = launch.ControlPlane(workdir, seed=cfg, redis_url=self.redis.url)
        self.envoys = []
        self.urls = []
        for i in range(2):
            port, admin = launch.free_port(), launch.free_port()
            boot = launch.render_bootstrap(
                config=None, listen_port=port, admin_port=admin, mock_port=self.mock.port,
                access_log=workdir / f"access-{i}.log", real_clusters=False,
                control_plane_port=self.cp.grpc_port, node_id=f"fleet-envoy-{i}",
                control_plane_token=self.cp.grpc_token, global_limits=True)
            self.envoys.append(launch.Envoy(
                workdir, boot, admin_port=admin, name=f"fleet-{i}",
                env={"SLUICE_MOCK_API_KEY": launch.MOCK_PROVIDER_SECRET}))
            self.urls.append(f"http://127.0.0.1:{port}")
        # Both take config from the control plane: wait until each serves.
        for u in self.urls:
            wait_for(lambda u=u: post(u, FREE_KEY).status_code == 200)

    def stat(self, i: int, suffix: str) -> int:
        with httpx.Client(timeout=5) as c:
            text = c.get(f"http://127.0.0.1:{self.envoys[i].admin_port}/stats").text
        return sum(int(v) for k, _, v in (l.partition(": ") for l in text.splitlines())
                   if k.endswith(suffix) and v.strip().isdigit())

    def stop(self):
        for e in self.envoys:
            e.stop()
        self.cp.stop()
        self.mock.stop()
        if self.redis.proc.poll() is None:
            self.redis.stop()


def post(url, key, **extra):
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], **extra}
    with httpx.Client(timeout=20) as c:
        return c.post(url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}", "Connection": "close"})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    yield f
    f.stop()


def test_two_envoys_admit_one_rpm_limit_together(fleet):
    """rpm 10 on the key; each Envoy alone would admit 10 (its own limit):
    together they admit 10, not 20."""
    away_from_minute_boundary()
    rs = [post(fleet.urls[i % 2], RPM_KEY) for i in range(20)]
    codes = [r.status_code for r in rs]
    assert codes.count(200) == 10 and codes[:10] == [200] * 10, codes
    assert codes[10:] == [429] * 10, codes
    refused = rs[10]
    err = refused.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "across all gateways" in err["message"], err
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # In Anthropic's API too (Envoy's refusal rewritten by Sluice), on the
    # other Envoy.
    a = anthropic.Anthropic(base_url=fleet.urls[1], api_key=RPM_KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as e:
        a.messages.create(model="mock-gpt", max_tokens=5,
                          messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "rate_limit_error", e.value.body
    # Keys without limits make no call to the service and are unaffected.
    def calls():
        return sum(fleet.stat(0, f"ratelimit.{s}") for s in ("ok", "over_limit", "error"))
    before = calls()
    assert post(fleet.urls[0], FREE_KEY).status_code == 200
    assert calls() == before


def test_tokens_charged_at_stream_end_block_the_next_request_elsewhere(fleet):
    """tpm 60: a stream on Envoy 0 bills more than that when it ends; the
    next request on Envoy 1 — whose own counters saw nothing — is refused."""
    away_from_minute_boundary()
    with httpx.Client(timeout=20) as c:
        with c.stream("POST", fleet.urls[0] + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {TPM_KEY}"},
                      json={"model": "mock-gpt", "stream": True,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "hello " * 30}]}) as r:
            assert r.status_code == 200
            body = b"".join(r.iter_bytes())
    assert b'"total_tokens"' in body
    # The charge is sent when the stream is done: poll briefly.
    def refused_on_the_other_envoy():
        r = post(fleet.urls[1], TPM_KEY)
        return r.status_code == 429 and "across all gateways" in r.json()["error"]["message"]
    wait_for(refused_on_the_other_envoy, timeout=10, step=0.2)


def test_a_budget_over_two_envoys_overshoots_by_at_most_what_was_in_flight(fleet):
    """A $0.2 daily budget (about five requests) and a burst of 40 at once,
    alternating between the two Envoys. Each Envoy's own reservations would
    admit about five each — ten in all, twice the budget; reserved across
    Envoys at request time and settled at stream end, the two together
    admit what one would, and what the ledger charged stays within the
    budget plus what in-flight estimates under-reserved."""
    from concurrent.futures import ThreadPoolExecutor
    budget = 0.2
    prices = fleet.workdir / "prices.json"
    prices.write_text(json.dumps({"mock-gpt-upstream": {
        "input_cost_per_token": 0.001, "output_cost_per_token": 0.002, "mode": "chat"}}))
    fleet.cp.cli("prices", "import", str(prices))
    out = json.loads(fleet.cp.cli("keys", "create", "--name", "burst", "--json",
                                  "--budget-usd", str(budget), "--period", "daily").stdout)
    kid, key = out["id"], out["key"]
    answered = [0]

    def known(url):
        ok = httpx.get(url + "/v1/models", timeout=10,
                       headers={"Authorization": f"Bearer {key}"}).status_code == 200
        answered[0] += ok
        return ok
    for u in fleet.urls:
        wait_for(lambda u=u: all(known(u) for _ in range(4)))
    with ThreadPoolExecutor(40) as ex:
        rs = list(ex.map(lambda i: post(fleet.urls[i % 2], key, max_tokens=8), range(40)))
    codes = [r.status_code for r in rs]
    ok = codes.count(200)
    assert codes.count(429) == 40 - ok, codes
    refused = [r.json()["error"] for r in rs if r.status_code == 429]
    assert all(e["code"] == "insufficient_quota" for e in refused), refused[:3]
    # Some were admitted by their Envoy's own counters and refused across
    # Envoys: the service's refusal, written by Sluice in the client's API.
    assert any("across all gateways" in e["message"] for e in refused), refused[:3]

    def row():
        rows = fleet.cp.api("GET", "/v1/usage?by=key&days=1")["rows"]
        return next((r for r in rows if r["group"] == kid), {"requests": 0, "cost_usd": 0})
    wait_for(lambda: row()["requests"] == 40 + answered[0], timeout=20, step=0.2)
    spent = row()["cost_usd"]
    one = spent / ok
    print(f"\n[measured] budget ${budget}: {ok} of 40 admitted across 2 Envoys, "
          f"${spent:.4f} charged (${one:.4f} each)")
    # Per Envoy alone this would be about 2 × budget / one.
    assert 1 <= ok <= budget / one + 1, (ok, spent, codes)
    # The estimate (body/4 prompt tokens + max_tokens) can undershoot the
    # provider's count by a few tokens per request, never by a request.
    assert spent <= budget + one * 0.25, (spent, ok)


def test_rate_limit_service_down_fails_open_and_says_so(fleet):
    """Redis killed: the service answers unavailable; Envoy lets requests of
    limited keys go on under its own per-Envoy limits (fail open, the
    default) and counts each in `ratelimit.failure_mode_allowed`."""
    assert post(fleet.urls[0], ROOMY_KEY).status_code == 200
    before = fleet.stat(0, "ratelimit.failure_mode_allowed")
    fleet.redis.stop()
    try:
        started = time.monotonic()
        codes = [post(fleet.urls[0], ROOMY_KEY).status_code for _ in range(3)]
        took = time.monotonic() - started
        assert codes == [200] * 3, codes
        assert took < 5, took
        wait_for(lambda: fleet.stat(0, "ratelimit.failure_mode_allowed") >= before + 3,
                 timeout=5)
    finally:
        fleet.redis.start()
    # Back: counted globally again (the connection manager reconnects).
    wait_for(lambda: post(fleet.urls[1], ROOMY_KEY).status_code == 200
             and fleet.stat(1, "ratelimit.ok") > 0, timeout=15, step=0.3)


def test_rate_limit_service_killed_leaves_each_envoy_its_own_limits(fleet):
    """The service's process itself killed (SIGKILL, connections refused
    rather than answered unavailable): requests go on, each Envoy's own rpm
    still holds — a fresh key with rpm 5 gets exactly 5 per Envoy, refused
    by the filter itself, not across gateways — and the failures are
    counted. The service restarted, counting across Envoys resumes."""
    away_from_minute_boundary()
    out = json.loads(fleet.cp.cli("keys", "create", "--name", "local", "--json",
                                  "--rpm", "5").stdout)
    key = out["key"]
    for u in fleet.urls:
        wait_for(lambda u=u: httpx.get(u + "/v1/models", timeout=10, headers={
            "Authorization": f"Bearer {key}"}).status_code == 200)
    before = fleet.stat(0, "ratelimit.failure_mode_allowed")
    fleet.cp.kill()
    try:
        rs = [post(fleet.urls[0], key) for _ in range(7)]
        codes = [r.status_code for r in rs]
        assert codes == [200] * 5 + [429] * 2, codes
        assert "all gateways" not in rs[-1].json()["error"]["message"]
        assert fleet.stat(0, "ratelimit.failure_mode_allowed") >= before + 5
        # The other Envoy has its own five.
        assert [post(fleet.urls[1], key).status_code for _ in range(5)] == [200] * 5
    finally:
        fleet.cp.start()
    ok_before = fleet.stat(1, "ratelimit.ok")
    wait_for(lambda: post(fleet.urls[1], ROOMY_KEY).status_code == 200
             and fleet.stat(1, "ratelimit.ok") > ok_before, timeout=20, step=0.3)
