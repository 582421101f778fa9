"""A real `mlflow server` (mlflow/server.sh) on a free loopback port, for integration tests.

Its SQLite database and artifacts live in a temporary directory; the fixture always stops it
by its own PID and the PIDs of the workers it started.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import descendants, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "mlflow" / "server.sh"


@dataclasses.dataclass
class Server:
    url: str
    root: Path
    start_seconds: float



def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the server, then SIGKILL it and every worker it started, each by its own PID."""
    workers = descendants(process.pid)  # before it exits: orphans would leave its process tree
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(root: Path, port: int) -> tuple[subprocess.Popen, float]:
    """`mlflow/server.sh` over the store in ``root`` on ``port``, once it answers /health: (the
    process, seconds it took). Appends to root/server.log, so a restarted server keeps one log."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with open(root / "server.log", "ab") as server_log:
        process = subprocess.Popen(["bash", str(SERVER_SCRIPT), "--workspace", str(root), "--port", str(port)],
                                   stdout=server_log, stderr=subprocess.STDOUT, env=env)
    try:
        while not healthy(url):
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n"
                            f"{(root / 'server.log').read_text()[-3000:]}")
            if time.monotonic() - started > 120:
                pytest.fail(f"mlflow server not healthy after 120 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
    except BaseException:
        stop(process)
        raise
    return process, time.monotonic() - started


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process, seconds = start_server(root, port)
    print(f"\nmlflow server answered /health after {seconds:.1f} s")
    try:
        yield Server(f"http://127.0.0.1:{port}", root, seconds)
    finally:
        stop(process)
