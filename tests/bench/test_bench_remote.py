"""`edgexray bench --remote` end to end against a real OpenSSH server on 127.0.0.1.

The test starts its own sshd (own config, throwaway host and client keys, a free port, as the
current user) and runs the artifact with a Python that has only numpy and ai-edge-litert, as a
Raspberry Pi would. If sshd is missing it is installed with apt-get; the tests skip, saying why,
only when that is impossible.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from model_factories import png_eval_set

from edgexray.bench.remote import parse_ssh_url, remote_bench
from edgexray.cli import main
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.record import schema_problems


def _find_sshd():
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _ensure_sshd() -> str:
    sshd = _find_sshd()
    if sshd and shutil.which("ssh") and shutil.which("scp"):
        return sshd
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("OpenSSH server not installed and cannot be installed here (needs root and apt-get)")
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )
    sshd = _find_sshd()
    if proc.returncode != 0 or not sshd:
        pytest.skip(f"apt-get could not install openssh-server: {proc.stderr.strip()[-300:]}")
    return sshd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_sshd(d: Path, client_key: Path | None = None):
    """An sshd on a free loopback port, as the current user, with its own keys in `d` (or the
    given client key's .pub authorized); yields {"url", "identity", "options", "dir", "port"}
    (also used by test_bench_fleet)."""
    sshd = _ensure_sshd()
    for key in ("host_key",) + (() if client_key else ("client_key",)):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    client_key = client_key or d / "client_key"
    shutil.copy(f"{client_key}.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation dir
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        options = (
            f"UserKnownHostsFile={d}/known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
        )
        yield {
            "url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}",
            "identity": str(client_key),
            "options": options,
            "dir": d,
            "port": port,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _workdirs() -> set:
    return set(glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgexray-bench.*")))


@pytest.mark.slow
def test_remote_bench_end_to_end(sshd_server, int8_artifact, clean_venv, tmp_path):
    data = png_eval_set(tmp_path / "data", per_class=2)
    before = _workdirs()
    target = parse_ssh_url(
        sshd_server["url"],
        identity=sshd_server["identity"],
        options=sshd_server["options"],
        connect_timeout=5,
    )
    doc = remote_bench(
        int8_artifact, target, data=data, remote_python=str(clean_venv), seconds=0.3, threads=1
    )
    assert schema_problems(doc) == []
    assert doc["producer"].startswith("run.py") and doc["remote"]["url"] == str(target)
    (entry,) = doc["results"]
    assert entry["runtime"] == "litert" and entry["accuracy"]["n"] == 4
    assert entry["memory_mb"]["method"] == "fresh-process" and entry["latency_ms"]["runs"] >= 10
    # the device ran it with its own Python: no torch there
    assert "torch" not in doc["environment"]["runtimes"]
    assert _workdirs() == before, "the artifact and images must be removed from the device"


@pytest.mark.slow
def test_remote_cli_writes_reports_and_refuses_a_tampered_artifact(
    sshd_server, int8_artifact, clean_venv, tmp_path
):
    args = [
        "bench",
        str(int8_artifact),
        "--remote",
        sshd_server["url"],
        "--identity",
        sshd_server["identity"],
        "--remote-python",
        str(clean_venv),
        "--seconds",
        "0.2",
        "--no-memory",
    ]
    for option in sshd_server["options"]:
        args += ["--ssh-option", option]
    out = tmp_path / "report"
    result = CliRunner().invoke(main, args + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["remote"]["python"] == str(clean_venv)
    assert (out / "report.html").is_file() and "| artifact | litert 2.1.0 |" in result.output

    tampered = tmp_path / "tampered"
    shutil.copytree(int8_artifact, tampered)
    (tampered / "run.py").write_text((tampered / "run.py").read_text() + "\n# edited\n")
    before = _workdirs()
    result = CliRunner().invoke(main, args[:1] + [str(tampered)] + args[2:])
    assert result.exit_code == 3  # IntegrityError, checked here before anything is copied
    assert "refusing to run" in result.output and "run.py: sha256" in result.output
    assert _workdirs() == before


def test_unreachable_host_fails_fast_with_a_clear_error(int8_artifact):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(
        EdgeXrayError, match=rf"cannot reach ssh://.*127\.0\.0\.1:{port} .*check the host and port"
    ):
        remote_bench(int8_artifact, parse_ssh_url(f"ssh://nobody@127.0.0.1:{port}", connect_timeout=3))
    assert time.monotonic() - t0 < 20
    # a silent address (TEST-NET-1, RFC 5737): the connect timeout bounds the wait
    t0 = time.monotonic()
    with pytest.raises(EdgeXrayError, match="cannot reach"):
        remote_bench(int8_artifact, parse_ssh_url("ssh://pi@192.0.2.1:22", connect_timeout=2))
    assert time.monotonic() - t0 < 20


def test_bad_urls():
    for url in ("pi@host", "http://host", "ssh://", "ssh://host:99999"):
        with pytest.raises(EdgeXrayError, match="ssh://user@host|out of range"):
            parse_ssh_url(url)
    t = parse_ssh_url("ssh://pi@raspberrypi.local:2222")
    assert (t.user, t.host, t.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_ssh_url("ssh://[::1]").host == "::1"
