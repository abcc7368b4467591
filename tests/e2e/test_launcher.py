"""`make run`'s launcher with ports that clash or are busy: one clear line,
or free ports picked — never a traceback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

import launch

LAUNCH = launch.ROOT / "envoy/launch.py"


def run(tmp_path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_PORT", "SLUICE_CONFIG")}
    return subprocess.Popen([sys.executable, str(LAUNCH), "run", "--workdir", str(tmp_path),
                             "--chunk-delay-ms", "0", "--concurrency", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_the_listener_on_the_control_planes_port_moves_the_control_plane(tmp_path):
    port = launch.free_port()
    p = run(tmp_path, "--port", str(port), "--cp-grpc-port", str(port))
    try:
        deadline = time.monotonic() + 90
        up = False
        while time.monotonic() < deadline and p.poll() is None:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5,
                               headers={"authorization": f"Bearer {launch.DEMO_KEY}"},
                               json={"model": "mock-gpt",
                                     "messages": [{"role": "user", "content": "hi"}]})
                up = r.status_code == 200
                if up:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert up, p.stderr.read() if p.poll() is not None else "not up in time"
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    assert f"control-plane gRPC port {port} is taken" in err
    assert "Traceback" not in err


def test_a_busy_listen_port_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p = run(tmp_path, "--port", str(busy))
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert err.strip() == f"sluice: port {busy} is in use; choose another with SLUICE_PORT=…"


def test_ctrl_c_at_any_point_of_start_up_stops_everything_cleanly(tmp_path):
    """Interrupted while starting (processes half up, the demo prices being
    imported, or serving): no traceback, exit at once, nothing left
    listening."""
    for i, delay in enumerate((0.3, 1.5, 3.0, 6.0)):
        port = launch.free_port()
        p = run(tmp_path / str(i), "--port", str(port))
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            raise AssertionError(f"still running 30 s after Ctrl-C at {delay} s: {err}")
        assert "Traceback" not in err, (delay, err)
        assert p.returncode in (0, 130), (delay, p.returncode, err)
        # Envoy went with it: the listener port is free again.
        assert launch.port_is_free(port), delay
