"""`ray job submit` against a real local head node: a job succeeds with its outputs, a
failing job reports FAILED with the error instead of hanging."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from glitchflow.pipelines.runtime import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(600)

RAY = str(REPO / ".venv" / "bin" / "ray")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head node of its own (loopback, dashboard = job server); stopped with its group.

    ``ray start`` records its address in ``/tmp/ray/ray_current_cluster``, which Ray's
    state API (and through it Ray Train's placement-group cleaner) resolves as the
    cluster to talk to; the file is put back as it was when the head stops, or later
    Ray Train runs in this session would query a dead head.

    ``ray start`` with token authentication refuses to start without a token (it never
    creates one, unlike ``ray.init``), so the head and its clients share a token file of
    their own: the test passes on a machine that has no ``~/.ray/auth_token``.
    """
    token = tmp_path_factory.mktemp("auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    marker = Path("/tmp/ray/ray_current_cluster")
    before = marker.read_text() if marker.exists() else None
    port, dashboard = free_port(), free_port()
    env = os.environ | {
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        # this head's own state API, not the tests' local instance's (set in os.environ)
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
    }
    log = (tmp_path_factory.mktemp("head") / "head.log").open("w")
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # every listening port of its own: another Ray on this machine (the tests'
            # local instance) already holds the defaults, e.g. the agent's 52365
            *(
                f"--{name}={free_port()}"
                for name in (
                    "dashboard-agent-listen-port",
                    "dashboard-agent-grpc-port",
                    "metrics-export-port",
                    "runtime-env-agent-port",
                    "ray-client-server-port",
                    "node-manager-port",
                    "object-manager-port",
                )
            ),
        ],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ok = subprocess.run(
            [RAY, "job", "list", "--address", address], env=env, capture_output=True, timeout=60
        )
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the head node's job server did not come up")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:  # `ray start --block` seldom stops on SIGTERM within 30 s (CI: 30.0 s teardown)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    if before is None:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(before)


def submit(head, submission_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    address, env = head
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        submission_id,
        "--working-dir",
        str(REPO),
        "--",
        *entrypoint,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)


def status(head, submission_id: str) -> str:
    address, env = head
    out = subprocess.run(
        [RAY, "job", "status", "--address", address, submission_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout + out.stderr


def test_submitted_job_succeeds_with_its_outputs(head, tmp_path):
    out = tmp_path / "twin"
    res = submit(
        head,
        "glitchflow-synth-ok",
        "python",
        "jobs/synth.py",
        "--config",
        "configs/demo.yaml",
        "--out",
        str(out),
        "--quiet",
        "twin.duration=64",
        "twin.frame_duration=32",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in status(head, "glitchflow-synth-ok").lower()
    assert len(list((out / "frames").glob("*.gwf"))) == 2
    assert (out / "truth.csv").is_file()


def test_failing_job_reports_failed_with_the_error(head, tmp_path):
    res = submit(
        head,
        "glitchflow-bad-config",
        "python",
        "jobs/scan.py",
        "--config",
        "configs/demo.yaml",
        "--frames",
        str(tmp_path),
        "--out",
        str(tmp_path / "scan"),
        "scan.no_such_key=1",
    )
    assert res.returncode != 0
    assert "failed" in status(head, "glitchflow-bad-config").lower()
    assert "scan.no_such_key" in res.stdout + res.stderr
