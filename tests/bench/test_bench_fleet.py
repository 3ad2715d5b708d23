"""Fleet bench: one artifact on several devices over SSH in parallel, one row per device; a device
that fails is a row with its error and does not sink the others (exit 4, reports still written).

Two real sshd instances on loopback ports (test_bench_remote.running_sshd, one client key for
both) and a third port where nothing listens. The "devices" run the artifact with this venv's
Python (numpy + ai-edge-litert), which keeps the test within seconds.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from model_factories import make_artifact, png_eval_set
from test_bench_remote import _free_port, running_sshd

from edgexray.bench.fleet import hosts2urls
from edgexray.cli import main
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.record import schema_problems


@pytest.fixture(scope="module")
def two_sshd(tmp_path_factory):
    key = tmp_path_factory.mktemp("fleet-key") / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(running_sshd(tmp_path_factory.mktemp(f"sshd{i}"), key)) for i in range(2)
        ]
        yield servers, key


@pytest.mark.slow
def test_fleet_bench_two_devices_and_one_unreachable(two_sshd, tiny_models, tmp_path):
    servers, key = two_sshd
    artifact = make_artifact(tmp_path / "art", tiny_models["tflite_int8"], precision="int8")
    data = png_eval_set(tmp_path / "data", per_class=2)
    dead = f"ssh://{getpass.getuser()}@127.0.0.1:{_free_port()}"  # nothing listens there
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"# bench fleet\n{servers[0]['url']}\n\n{dead}   # switched off\n")
    out = tmp_path / "fleet"
    t0 = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(artifact),
            "--hosts",
            str(hosts),
            "--remote",
            servers[1]["url"],
            "--identity",
            str(key),
            "--ssh-option",
            "StrictHostKeyChecking=no",
            "--ssh-option",
            "UserKnownHostsFile=/dev/null",
            "--connect-timeout",
            "3",
            "--remote-python",
            sys.executable,
            "--seconds",
            "0.2",
            "--data",
            str(data),
            "--out",
            str(out),
        ],
    )
    elapsed = time.monotonic() - t0
    assert result.exit_code == 4, result.output  # CheckFailed: some hosts failed
    assert f"error: 1 of 3 hosts failed ({dead})" in result.output
    doc = json.loads((out / "results.json").read_text())
    assert schema_problems(doc) == []
    by_host = {h["host"]: h for h in doc["fleet"]}
    assert len(doc["results"]) == 3 and len(by_host) == 3
    ok = [e for e in doc["results"] if not e["error"]]
    failed = [e for e in doc["results"] if e["error"]]
    assert len(ok) == 2 and len(failed) == 1
    for entry in ok:
        lat = entry["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert entry["memory_mb"]["peak_rss"] > 0 and entry["accuracy"]["n"] == 4
        env = by_host[entry["label"]]["environment"]
        assert isinstance(env["cpu_isa"], list) and env["cpu_model"]
    assert "cannot reach" in failed[0]["error"] and "check the host and port" in failed[0]["error"]
    # one table: a header, a rule and one row per host, the failed one with its reason
    table = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    assert table[0].startswith("| host | CPU | ISA | runtime | p50 ms | p90 ms | p99 ms")
    assert len(table) == 2 + 3
    assert sum("| ok |" in line for line in table) == 2
    assert sum("failed: cannot reach" in line for line in table) == 1
    assert (out / "latency.png").stat().st_size > 0 and (out / "report.html").is_file()
    assert elapsed < 60, f"fleet bench took {elapsed:.1f} s"


def test_hosts_file_errors(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# only a comment\n\n")
    with pytest.raises(EdgeXrayError, match="lists no host"):
        hosts2urls(hosts)
    hosts.write_text("ssh://pi@a.local\npi@b.local\n")
    with pytest.raises(EdgeXrayError, match=r"hosts.txt, line 2: remote 'pi@b.local' is not an ssh URL"):
        hosts2urls(hosts)
    hosts.write_text("ssh://pi@a.local  # kitchen\nssh://pi@b.local:2222\n")
    assert hosts2urls(hosts) == ["ssh://pi@a.local", "ssh://pi@b.local:2222"]


def test_fleet_refuses_a_host_given_twice(tiny_models, tmp_path):
    artifact = make_artifact(tmp_path / "art", tiny_models["tflite_int8"], precision="int8")
    url = "ssh://pi@127.0.0.1:1"
    result = CliRunner().invoke(main, ["bench", str(artifact), "--remote", url, "--remote", url])
    assert result.exit_code == 2 and "given more than once" in result.output
