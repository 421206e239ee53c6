"""examples/flower/deploy.sh refuses bad input with one error line before it starts anything.

The full run (a SuperLink and SuperNodes) is exercised by CI: `bash examples/flower/deploy.sh 2 2`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "examples" / "flower" / "deploy.sh"
BIN = str(Path(sys.executable).parent)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def deploy(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **env}
    return subprocess.run(
        ["bash", str(DEPLOY), *args], capture_output=True, text=True, env=environ, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("0", "2"), "NODES=0"),
        (("abc", "2"), "NODES=abc"),
        (("1", "2"), "NODES=1"),
        (("3", "0"), "ROUNDS=0"),
        (("3", "-1"), "ROUNDS=-1"),
        (("3",), "NODES and ROUNDS"),
    ],
)
def test_bad_counts_give_one_error_line_and_exit_2(args, field):
    proc = deploy(*args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {field}")
    assert "usage: bash examples/flower/deploy.sh NODES ROUNDS" in proc.stderr


def test_a_busy_port_is_refused_before_anything_starts():
    pytest.importorskip("flwr")
    if shutil.which("flwr", path=BIN) is None:
        pytest.skip("Flower's commands are not next to this Python")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = deploy("2", "1", FLOWER_PORT=str(port))
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"error: port {port} on 127.0.0.1 is busy; set FLOWER_PORT to the first of 3 free ports\n"
    )
    assert proc.stdout == ""
