"""`edgexray bench ARTIFACT --remote ssh://user@host[:port]`: run the artifact's own run.py on
a device over SSH and bring its results back.

The OpenSSH client does the work (ssh/scp through subprocess, BatchMode so nothing ever waits
for a password, ConnectTimeout so an unreachable host fails fast). The artifact, and the
evaluation images when asked, go to a fresh temporary folder on the device, which is removed
afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgexray.bench.local import is_artifact, parse_run_py_output, run_py_args
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^@/:]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None  # None: ssh's default (the local user, or ~/.ssh/config)
    port: int = 22
    identity: str | None = None  # private key file (-i)
    options: tuple = ()  # extra "-o KEY=VALUE" options, e.g. ("UserKnownHostsFile=/tmp/kh",)
    connect_timeout: int = 10  # seconds for the TCP connection and key exchange

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def base_options(self) -> list:
        opts = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.identity:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            opts += ["-o", option]
        return opts

    def __str__(self) -> str:
        return f"ssh://{self.destination}:{self.port}"


def parse_ssh_url(url: str, **kwargs) -> SshTarget:
    m = URL_RE.match(url or "")
    if not m:
        raise EdgeXrayError(
            f"remote {url!r} is not an ssh URL; expected ssh://user@host[:port], "
            "e.g. ssh://pi@raspberrypi.local:22"
        )
    port = int(m["port"] or 22)
    if not 0 < port < 65536:
        raise EdgeXrayError(f"port {port} in {url!r} is out of range 1-65535")
    return SshTarget(host=m["host"].strip("[]"), user=m["user"], port=port, **kwargs)


def _require_client() -> None:
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise EdgeXrayError(
                f"the OpenSSH client ({tool}) is not installed here; install it "
                "(apt-get install openssh-client) to bench on a remote device"
            )


def _run(cmd: list, target: SshTarget, what: str, timeout: float) -> subprocess.CompletedProcess:
    log.debug("%s: %s", what, " ".join(shlex.quote(c) for c in cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EdgeXrayError(
            f"{what} on {target} did not finish within {timeout:.0f} s; check the "
            "connection or raise --timeout"
        ) from None
    if proc.returncode == 255:  # ssh's own failure: connection, authentication, host key
        message = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise EdgeXrayError(
            f"cannot reach {target} ({what}): {message}; check the host and port, "
            "that sshd runs there, and that key login works without a password "
            f"(try: ssh -p {target.port} {target.destination} true)"
        )
    return proc


def ssh(target: SshTarget, remote_command: str, what: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = ["ssh", *target.base_options(), "-p", str(target.port), target.destination, remote_command]
    return _run(cmd, target, what, timeout)


def scp(target: SshTarget, sources: list, dest: str, what: str, timeout: float, *, upload: bool):
    """Copy recursively; `dest` / `sources` are remote paths on the side that is remote."""
    remote = lambda p: f"{target.destination}:{shlex.quote(str(p))}"  # noqa: E731
    args = [str(s) for s in sources] + [remote(dest)] if upload else [remote(s) for s in sources] + [dest]
    cmd = ["scp", "-q", "-r", "-p", *target.base_options(), "-P", str(target.port), *args]
    proc = _run(cmd, target, what, timeout)
    if proc.returncode != 0:
        raise EdgeXrayError(f"{what} to/from {target} failed: {proc.stderr.strip()[-300:]}")
    return proc


@contextlib.contextmanager
def remote_workdir(target: SshTarget, keep: bool = False):
    """A fresh temporary folder on the device (its path), removed afterwards whatever happened
    unless `keep`."""
    _require_client()
    quick = 30 + 2 * target.connect_timeout
    proc = ssh(target, 'mktemp -d "${TMPDIR:-/tmp}/edgexray-bench.XXXXXX"', "creating a work folder", quick)
    workdir = proc.stdout.strip()
    if proc.returncode != 0 or not workdir.startswith("/"):
        raise EdgeXrayError(f"could not create a temporary folder on {target}: {proc.stderr.strip()}")
    try:
        yield workdir
    finally:
        if not keep:
            try:
                cleanup = ssh(target, f"rm -rf {shlex.quote(workdir)}", "removing the work folder", quick)
                problem = cleanup.stderr.strip() if cleanup.returncode else None
            except EdgeXrayError as e:  # never hide the error that got us here
                problem = str(e)
            if problem:
                log.warning("could not remove %s on %s: %s", workdir, target, problem)


def _run_py_remotely(target: SshTarget, folder: str, args: list, remote_python: str, timeout: float) -> dict:
    """`python run.py ARGS --out results.json` in the device folder `folder`, as a checked bench
    document (the run.py error, or a clear message when python is missing)."""
    out = f"{folder}/results.json"
    command = f"cd {shlex.quote(folder)} && {shlex.quote(remote_python)} run.py " + " ".join(
        shlex.quote(a) for a in [*args, "--out", out]
    )
    proc = ssh(target, command, f"running run.py {args[0]}", timeout)
    if proc.returncode == 127:
        raise EdgeXrayError(
            f"{remote_python!r} was not found on {target}; pass "
            "--remote-python with the device's Python 3 (with numpy and the "
            "runtime installed)"
        )
    text = None
    if proc.returncode == 0:
        with tempfile.TemporaryDirectory(prefix="edgexray-remote-") as tmp:
            quick = 30 + 2 * target.connect_timeout
            scp(target, [out], tmp, "fetching results", quick, upload=False)
            text = (Path(tmp) / "results.json").read_text(encoding="utf-8")
    doc = parse_run_py_output(proc, str(target), text)
    doc["remote"] = {"url": str(target), "python": remote_python}
    return doc


def remote_bench(
    artifact,
    target: SshTarget | str,
    *,
    data=None,
    remote_python: str = "python3",
    timeout: float = 1800,
    keep: bool = False,
    **options,
) -> dict:
    """Copy the artifact (and `data`) to the device, run `run.py bench` there, return its document.

    options: seconds, runs, threads, limit, memory, warmup, label (as for run.py bench).
    """
    _require_client()
    target = parse_ssh_url(target) if isinstance(target, str) else target
    artifact = Path(artifact)
    if not is_artifact(artifact):
        raise EdgeXrayError(
            f"{str(artifact)!r} is not an artifact folder (no manifest.json); "
            "remote runs need the folder `edgexray build` wrote"
        )
    if data is not None and not Path(data).is_dir():
        raise EdgeXrayError(f"evaluation data {str(data)!r} is not a directory")
    with remote_workdir(target, keep) as workdir:
        scp(target, [artifact.resolve()], f"{workdir}/artifact", "copying the artifact", timeout, upload=True)
        remote_data = None
        if data is not None:
            scp(
                target,
                [Path(data).resolve()],
                f"{workdir}/data",
                "copying the evaluation images",
                timeout,
                upload=True,
            )
            remote_data = f"{workdir}/data"
        args = ["bench", *run_py_args(data=remote_data, **options)]
        return _run_py_remotely(target, f"{workdir}/artifact", args, remote_python, timeout)


def remote_time(
    folder,
    files: list,
    target: SshTarget | str,
    *,
    remote_python: str = "python3",
    timeout: float = 1800,
    **options,
) -> dict:
    """Copy `folder` (a run.py and the model `files` in it) to the device and run `run.py time
    FILES` there: each file timed in its own process. options: seconds, runs, threads, rounds."""
    _require_client()
    target = parse_ssh_url(target) if isinstance(target, str) else target
    with remote_workdir(target) as workdir:
        scp(
            target,
            [Path(folder).resolve()],
            f"{workdir}/candidates",
            "copying the candidates",
            timeout,
            upload=True,
        )
        args = ["time", *[Path(f).name for f in files]]
        for name, value in options.items():
            if value is not None:
                args += [f"--{name}", str(value)]
        return _run_py_remotely(target, f"{workdir}/candidates", args, remote_python, timeout)
