"""A real single-node SLURM cluster on this machine, started and stopped by the tests.

:func:`start_slurm` writes a munge key and a ``slurm.conf`` into a temporary folder, starts its own
``munged`` (own socket), ``slurmctld`` and ``slurmd`` in the foreground as children of the test
process, waits until ``sinfo`` shows the node idle and returns a :class:`SlurmCluster`; leaving
the ``with`` block (or :meth:`SlurmCluster.stop`) cancels the jobs and ends every process it
started. Nothing outside the folder is touched: the system's munge socket, ``/etc/slurm`` and the
default ports stay free, and each cluster takes free TCP ports, so leftover or parallel runs do
not collide.

Clients find the cluster through ``SLURM_CONF`` alone (``slurm.conf`` names the munge socket in
``AuthInfo``). :attr:`SlurmCluster.env` holds the variables to set, :meth:`SlurmCluster.run`
runs a SLURM command against the cluster, and :meth:`SlurmCluster.activated` sets the variables
in ``os.environ`` for code that calls ``sbatch`` itself with the process environment, as
dask-jobqueue does. It needs root and Debian's ``slurmctld slurmd slurm-client munge``;
anything missing raises :class:`SlurmUnavailableError`, which the ``slurm`` fixture of
``conftest.py`` turns into a skip that gives the reason.

Used by tests as ``from slurm_cluster import ...`` (``conftest.py`` puts ``tests/`` on
``sys.path``), or through the ``slurm`` (session) and ``slurm_env`` (one test, environment set)
fixtures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")
PARTITION = "local"
START_TIMEOUT_S = 30.0
# Variables that would point the clients at another cluster or add options to every job.
_FOREIGN_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SCANCEL_", "SINFO_")
_MAX_RUN_DIR = 60  # unix socket paths (munge, slurmd spool) must stay under 108 bytes


class SlurmUnavailableError(RuntimeError):
    """SLURM cannot run here; the message says why."""


@dataclass
class SlurmCluster:
    """A running single-node cluster (see the module docstring)."""

    root: Path  # the folder holding its configuration, state, spool and logs
    conf: Path  # its slurm.conf
    node: str
    partition: str
    cpus: int
    env: dict[str, str]  # to set for clients: SLURM_CONF
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _cleanup: list[Path] = field(default_factory=list, repr=False)
    _deadline: float = field(default=0.0, repr=False)  # of the start

    def client_env(self) -> dict[str, str]:
        """The current environment without foreign SLURM variables, plus :attr:`env`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
        return base | self.env

    def run(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM command (``sbatch``, ``squeue``, ...) against this cluster; text output."""
        return subprocess.run(
            list(args), env=self.client_env(), capture_output=True, text=True, check=check,
            timeout=timeout,
        )  # fmt: skip

    def job_ids(self) -> list[str]:
        """Ids of the jobs ``squeue`` lists (pending, running, completing)."""
        out = self.run("squeue", "--noheader", "--format=%i").stdout
        return out.split()

    @contextlib.contextmanager
    def activated(self) -> Iterator[SlurmCluster]:
        """Inside the block ``os.environ`` talks to this cluster (restored afterwards)."""
        saved = {k: v for k, v in os.environ.items() if k.startswith(_FOREIGN_PREFIXES)}
        for key in saved:
            del os.environ[key]
        os.environ.update(self.env)
        try:
            yield self
        finally:
            for key in [k for k in os.environ if k.startswith(_FOREIGN_PREFIXES)]:
                del os.environ[key]
            os.environ.update(saved)

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the daemons' logs, for error messages."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.root / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel all jobs, stop slurmd, slurmctld and munged, kill any process left behind."""
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.run("scancel", "--full", f"--partition={self.partition}", check=False,
                         timeout=10)  # fmt: skip
                deadline = time.monotonic() + 10
                while self.job_ids() and time.monotonic() < deadline:
                    time.sleep(0.2)
                # slurmstepd ends shortly after its job leaves squeue
                spared = {os.getpid(), os.getppid()} | {p.pid for p in self._procs.values()}
                while _strays(self.conf, spared) and time.monotonic() < deadline:
                    time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _kill_strays(self.conf)
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup.clear()

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_slurm(
    tmp_dir: Path, *, timeout: float = START_TIMEOUT_S, partition: str = PARTITION
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with their files under ``tmp_dir``; see the module.

    Raises:
        SlurmUnavailableError: not root, a command missing, a daemon failed, or the node not idle
            within ``timeout`` seconds (the message says which, with the daemons' last log lines).
    """
    missing = [cmd for cmd in COMMANDS if shutil.which(cmd) is None]
    if missing:
        raise SlurmUnavailableError(f"{', '.join(missing)} not on PATH (Debian: apt-get install "
                                    "slurmctld slurmd slurm-client munge)")  # fmt: skip
    if sys.platform != "linux" or os.geteuid() != 0:
        raise SlurmUnavailableError("the test cluster runs its daemons as root; not root here")
    tmp_dir = Path(tmp_dir).resolve()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cleanup: list[Path] = []
    root = tmp_dir
    if len(str(root)) > _MAX_RUN_DIR:  # a short folder for the sockets
        root = Path(tempfile.mkdtemp(prefix="slurm-"))
        cleanup.append(root)
    node, cpus, hardware = _node_hardware()
    conf = root / "slurm.conf"
    cluster = SlurmCluster(root, conf, node, partition, cpus, {"SLURM_CONF": str(conf)},
                           _cleanup=cleanup)  # fmt: skip
    try:
        _write_config(root, node, hardware, partition)
        _start(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_hardware() -> tuple[str, int, str]:
    """(node name, CPUs, the hardware fields of the NodeName line) as ``slurmd -C`` reports."""
    try:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30,
                             env=os.environ | {"SLURM_CONF": os.devnull}).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise SlurmUnavailableError(f"slurmd -C failed: {exc}") from exc
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    try:
        node, cpus = fields["NodeName"], int(fields["CPUs"])
        int(fields["RealMemory"])
    except (KeyError, ValueError) as exc:
        raise SlurmUnavailableError(f"cannot read the node from slurmd -C: {out!r}") from exc
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return node, cpus, " ".join(f"{key}={fields[key]}" for key in keys if key in fields)


def _slurm_version() -> tuple[int, int]:
    """(major, minor) of ``slurmd -V`` ("slurm-wlm 22.05.8" -> (22, 5)); (0, 0) if unknown."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True, timeout=30).stdout
        major, minor = out.split()[-1].split(".")[:2]
        return int(major), int(minor)
    return 0, 0


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on this machine right now."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _write_config(root: Path, node: str, hardware: str, partition: str) -> None:
    for sub in ("state", "spool"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    fd = os.open(root / "munge.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key:  # munged insists on a key only its owner can read
        os.fchmod(fd, 0o600)
        key.write(os.urandom(128))
    ctld_port, slurmd_port = _free_ports(2)
    lines = {
        "ClusterName": "leukotest",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": ctld_port,
        "SlurmdPort": slurmd_port,
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge.sock'}",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        "SlurmctldDebug": "info",
        "SlurmdDebug": "info",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",  # memory not consumable: jobs without --mem fit too
        "SchedulerType": "sched/backfill",
        "MpiDefault": "none",
        "SwitchType": "switch/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
        "PropagateResourceLimits": "NONE",
        "ReturnToService": 2,
        "MailProg": "/bin/true",
        "KillWait": 2,
        "MinJobAge": 5,
        "InactiveLimit": 0,
    }
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    text += (
        f"NodeName={node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN\n"
        f"PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP "
        "OverSubscribe=FORCE:4\n"
    )
    (root / "slurm.conf").write_text(text)
    if _slurm_version() >= (23, 2):  # no cgroups at all (23.02+); 22.05 finds cgroup v1/v2 itself
        (root / "cgroup.conf").write_text("CgroupPlugin=disabled\n")


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get SIGTERM when the test process dies, so that a
    killed pytest leaves no daemons behind (Linux prctl; None where unavailable). The signal
    comes when the *thread* that started the child ends: start clusters from the main thread."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cluster: SlurmCluster, name: str, args: Sequence[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    with open(cluster.root / f"{name}.out", "wb") as out:
        cluster._procs[name] = subprocess.Popen(
            [name, *args], env=env | cluster.env, cwd=cluster.root, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal(),
        )  # fmt: skip


def _check_alive(cluster: SlurmCluster) -> None:
    for name, proc in cluster._procs.items():
        if proc.poll() is not None:
            out = (cluster.root / f"{name}.out").read_text(errors="replace")[-1500:].strip()
            raise SlurmUnavailableError(
                f"{name} exited with status {proc.returncode}: {out}\n{cluster.log_tail()}"
            )


def _wait(
    cluster: SlurmCluster, timeout: float, ready: Callable[[], object], what: Callable[[], str]
) -> None:
    """Poll ``ready`` until the start deadline of the cluster; past it raise, saying ``what()``."""
    while True:
        _check_alive(cluster)
        if ready():
            return
        if time.monotonic() > cluster._deadline:
            raise SlurmUnavailableError(f"{what()} within {timeout:g} s\n{cluster.log_tail()}")
        time.sleep(0.2)


def _start(cluster: SlurmCluster, timeout: float) -> None:
    """munged, then slurmctld (until ``scontrol ping`` says UP), then slurmd (until idle)."""
    root = cluster.root
    cluster._deadline = time.monotonic() + timeout
    sock = root / "munge.sock"
    _spawn(cluster, "munged", [
        "--foreground", "--force", f"--socket={sock}", f"--key-file={root / 'munge.key'}",
        f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
        f"--seed-file={root / 'munged.seed'}",
    ])  # fmt: skip
    _wait(cluster, timeout, sock.exists, lambda: f"munged made no socket {sock}")
    conf = str(cluster.conf)
    _spawn(cluster, "slurmctld", ["-D", "-c", "-i", "-f", conf])
    _wait(cluster, timeout, lambda: _quiet(cluster, "scontrol", "ping", want="UP"),
          lambda: "slurmctld did not answer scontrol ping")  # fmt: skip
    _spawn(cluster, "slurmd", ["-D", "-f", conf, "-N", cluster.node])

    state = ["no answer"]

    def node_idle() -> bool:
        out = _quiet(cluster, "sinfo", "--noheader", "--Node", "--format=%T %E")
        state[0] = out.strip() if out else "no answer"
        return out is not None and out.split()[:1] == ["idle"]

    _wait(cluster, timeout, node_idle,
          lambda: f"node {cluster.node} not idle (sinfo: {state[0]})")  # fmt: skip


def _quiet(cluster: SlurmCluster, *args: str, want: str | None = None) -> str | None:
    """Output of a client command, or None if it fails (the daemons are still starting)."""
    try:
        done = cluster.run(*args, check=False, timeout=10)
    except (subprocess.SubprocessError, OSError):
        return None
    if done.returncode != 0 or (want is not None and want not in done.stdout):
        return None
    return done.stdout


def _strays(conf: Path, spared: set[int]) -> list[int]:
    """Pids of processes running with this cluster's ``SLURM_CONF`` (slurmstepd, job steps), but
    not those in ``spared`` nor their children (slurmctld's slurmscriptd)."""
    needle = f"SLURM_CONF={conf}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in spared:
            continue
        try:
            environ = (proc / "environ").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid not in spared and needle in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def _kill_strays(conf: Path) -> None:
    """End what still runs with this cluster's ``SLURM_CONF``: SIGTERM, then SIGKILL."""
    spared = {os.getpid(), os.getppid()}
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        found = _strays(conf, spared)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and _strays(conf, spared):
            time.sleep(0.1)
