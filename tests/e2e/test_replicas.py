"""Two control-plane replicas on one Postgres (docs/fleet.md): either
replica's change reaches an Envoy connected to the other, and one replica
killed with SIGKILL under streaming load loses and doubles no usage — every
Envoy sends each usage record to both replicas' AccessLogService, the ledger
keeps it once by the gateway's id."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

import launch
from conftest import gateway_config, sha, wait_for

LOAD_KEY = "sk-replicas-load"


def chat(url, key, stream=False):
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=20) as c:
        r = c.post(url + "/v1/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {key}"})
        return r


class Replicas:
    def __init__(self, workdir):
        cfg = gateway_config()
        cfg["keys"].append({"id": "replicas-load", "sha256": sha(LOAD_KEY)})
        self.seed = cfg
        self.workdir = workdir
        self.cps, self.envoy, self.mock = [], None, None
        self.pg = launch.Postgres()
        try:
            self._start(workdir, cfg)
        except BaseException:
            self.stop()  # nothing left running when start-up fails
            raise

    def _start(self, workdir, cfg):
        self.mock = launch.Mock(workdir)
        token = "replicas-grpc-token-" + "x" * 16
        # Both start at once on the empty store (as a Kubernetes StatefulSet
        # with parallel pod management does): migrations and the seed are
        # serialised in Postgres, one seeds, the other finds it filled.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as ex:
            started = [ex.submit(launch.ControlPlane, workdir, seed=cfg, db=self.pg.url,
                                 grpc_token=token, name=f"cp-{i}") for i in range(2)]
        # Those that started are stopped by `stop` even if the other failed.
        self.cps = [f.result() for f in started if f.exception() is None]
        for f in started:
            f.result()
        port, admin = launch.free_port(), launch.free_port()
        boot = launch.render_bootstrap(
            config=None, listen_port=port, admin_port=admin, mock_port=self.mock.port,
            access_log=workdir / "access.log", real_clusters=False,
            control_plane_port=[cp.grpc_port for cp in self.cps], node_id="replicas-envoy",
            control_plane_token=token)
        self.envoy = launch.Envoy(workdir, boot, admin_port=admin, name="replicas-envoy",
                                  env={"SLUICE_MOCK_API_KEY": launch.MOCK_PROVIDER_SECRET})
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: chat(self.url, LOAD_KEY).status_code == 200)

    def new_key(self, cp) -> str:
        out = json.loads(cp.cli("keys", "create", "--name", "r", "--json").stdout)
        return out["key"]

    def requests_of(self, cp, key_id: str) -> int:
        rows = cp.api("GET", "/v1/usage?by=key&days=1")["rows"]
        return sum(r["requests"] for r in rows if r["group"] == key_id)

    def stop(self):
        if self.envoy:
            self.envoy.stop()
        for cp in self.cps:
            if cp.proc.poll() is None:
                cp.stop()
        if self.mock:
            self.mock.stop()
        self.pg.remove()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    r = Replicas(tmp_path_factory.mktemp("replicas"))
    yield r
    r.stop()


def test_a_change_on_either_replica_reaches_the_envoy(replicas):
    """The Envoy's xDS stream is on one replica: a key created on each is
    served within seconds (one of the two crossed replicas through the
    store), and both replicas name the same version. The seed happened
    once."""
    seeded = {k["id"] for k in replicas.cps[1].api("GET", "/v1/keys")["keys"]}
    assert seeded == {k["id"] for k in replicas.seed["keys"]}
    for cp in replicas.cps:
        key = replicas.new_key(cp)
        wait_for(lambda: chat(replicas.url, key).status_code == 200, timeout=15)
    wait_for(lambda: len({cp.api("GET", "/v1/status")["version"] for cp in replicas.cps}) == 1,
             timeout=5)


def test_a_replica_killed_under_load_loses_and_doubles_nothing(replicas):
    """Eight clients stream for ~8 s; one replica is killed with SIGKILL
    after 3 s. No client error, the other replica keeps pushing (a key made
    on it after the kill works) and ingesting, and the ledger holds every
    request exactly once."""
    before = replicas.requests_of(replicas.cps[1], "replicas-load")
    ok, errors = [0], []
    lock = threading.Lock()
    stop = time.monotonic() + 8

    def client():
        with httpx.Client(timeout=20) as c:
            while time.monotonic() < stop:
                try:
                    with c.stream("POST", replicas.url + "/v1/chat/completions",
                                  headers={"Authorization": f"Bearer {LOAD_KEY}"},
                                  json={"model": "mock-gpt", "stream": True,
                                        "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "hi"}]}) as r:
                        body = b"".join(r.iter_bytes())
                    good = r.status_code == 200 and b"[DONE]" in body
                except httpx.HTTPError as e:
                    good, body = False, repr(e).encode()
                with lock:
                    if good:
                        ok[0] += 1
                    else:
                        errors.append(body[:200])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(3)
    killed, survivor = replicas.cps
    killed.kill()
    # The survivor pushes: a key created on it now is served.
    key = replicas.new_key(survivor)
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    wait_for(lambda: chat(replicas.url, key).status_code == 200, timeout=15)
    sent = ok[0]
    assert sent > 100, sent

    def ledger():
        return replicas.requests_of(survivor, "replicas-load") - before

    # Every request once: not fewer (nothing lost with the killed replica),
    # not more (nothing counted twice although both replicas received it).
    try:
        wait_for(lambda: ledger() >= sent, timeout=20)
    finally:
        print(f"\n[measured] {sent} streams, ledger {ledger()}, killed replica mid-load")
    time.sleep(1)
    assert ledger() == sent
    st = survivor.api("GET", "/v1/status")
    assert sum(st["lost_records_by_node"].values()) == 0, st["log_streams"]
    # The killed replica comes back on the same store and serves the same
    # version as the survivor.
    killed.start()
    wait_for(lambda: killed.api("GET", "/v1/status")["version"]
             == survivor.api("GET", "/v1/status")["version"], timeout=10)


def test_a_postgres_restart_loses_no_usage(replicas):
    """Postgres stopped: the Envoy keeps serving (its last config), the
    replicas keep the records they receive and retry their ledger writes;
    Postgres back, every request is in the ledger once."""
    cp = replicas.cps[1]
    before = replicas.requests_of(cp, "replicas-load")
    replicas.pg.stop()
    try:
        codes = [chat(replicas.url, LOAD_KEY).status_code for _ in range(10)]
        assert codes == [200] * 10, codes
        time.sleep(1)  # the writes fail and are retried meanwhile
    finally:
        replicas.pg.start()
    def counted():
        try:
            return replicas.requests_of(cp, "replicas-load") - before
        except OSError:
            return -1  # the replica's first statements after the restart reconnect
    wait_for(lambda: counted() >= 10, timeout=30, step=0.5)
    time.sleep(0.5)
    assert replicas.requests_of(cp, "replicas-load") - before == 10
    assert cp.api("GET", "/v1/status")["ledger_write_failures"] > 0


def test_the_store_over_tls_checks_the_servers_certificate(tmp_path):
    """A managed Postgres wants TLS (`?sslmode=require`): the control plane
    connects over TLS to a server that refuses plain connections, trusting
    the CA it is given (`SLUICE_DB_CA`) — and refuses a server whose
    certificate does not chain to it, saying why, at once."""
    pg = launch.Postgres(ssl=True)
    try:
        url = pg.url + "?sslmode=require"
        with pytest.raises(RuntimeError):
            launch.ControlPlane(tmp_path, db=url, name="cp-untrusted",
                                extra_env={"SLUICE_DB_CA": "/etc/ssl/certs/ca-certificates.crt"})
        log = (tmp_path / "cp-untrusted.log").read_text()
        assert "UnknownIssuer" in log or "certificate" in log.lower(), log[-500:]
        # Plain TCP is refused by this server.
        with pytest.raises(RuntimeError):
            launch.ControlPlane(tmp_path, db=pg.url + "?sslmode=disable", name="cp-plain")
        cp = launch.ControlPlane(tmp_path, db=url, name="cp-tls",
                                 extra_env={"SLUICE_DB_CA": str(pg.ca)},
                                 seed=gateway_config())
        try:
            assert cp.api("GET", "/v1/status")["version"] >= 1
            assert len(cp.api("GET", "/v1/keys")["keys"]) == len(gateway_config()["keys"])
        finally:
            cp.stop()
    finally:
        pg.remove()
