"""A simulated multi-node cluster for the tests: a thin driver of tools/cluster/cluster.

Each node is a set of Linux namespaces (network, UTS, IPC, mount) with its own hostname,
address, /dev/shm and node-local /tmp; pytest's whole base temp folder, the repository and
the venv are shared at the same path on every node. No PID namespace: pids are host pids, and
a process belongs to node K when its network or UTS namespace is node K's. See docs/cluster.md.

    cluster = SimCluster(shared=tmp_path_factory.mktemp("cluster"), share=basetemp)
    cluster.up()
    result = cluster.mpirun(["data.path=...", "run.dir=..."])   # python -m hpcgan.train ...
    cluster.release()   # tears down unless another pytest session still holds it
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "cluster" / "cluster"


def unavailable() -> str | None:
    """Why the simulated cluster cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the simulated cluster needs Linux namespaces"
    if os.geteuid() != 0:
        return "the simulated cluster needs root (network and mount namespaces)"
    for tool in ("ip", "unshare", "nsenter", "flock"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"the simulated cluster needs {tool} (iproute2 / util-linux)"
    return None


def cluster_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment for cluster commands: the caller's, with what MPI runs need as root in
    tests (as tests/conftest.py's mpi_env), updated by extra (a None value removes the name)."""
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",  # 4 ranks on 2 real cores must not busy-poll
        HDF5_USE_FILE_LOCKING="FALSE",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
    )
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def kill_tree(pid: int) -> None:
    """SIGKILL pid and all its descendants. The agent enters a node without forking, so the
    daemons and ranks on every node descend from the mpirun that started them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    for p in tree:
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass


class SimCluster:
    """Drives one simulated cluster (tools/cluster/cluster) from the tests."""

    def __init__(
        self,
        shared: Path,
        n_nodes: int = 2,
        share: Sequence[Path] = (),
        name: str | None = None,
    ) -> None:
        self.shared = Path(shared)
        self.nodes = [f"node{k}" for k in range(1, n_nodes + 1)]
        self._share = [self.shared, *map(Path, share)]
        self._env = {"HPCGAN_CLUSTER_NAME": name} if name else {}
        cluster = name or os.environ.get("HPCGAN_CLUSTER_NAME", "hpcgan")
        self.state = Path(os.environ.get("HPCGAN_CLUSTER_STATE", f"/run/{cluster}-cluster"))
        self._holder = str(os.getpid())

    # -- bring up and tear down ------------------------------------------------------------
    def tool(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``tools/cluster/cluster ARGS``, captured and bounded."""
        return subprocess.run(
            [str(TOOL), *args],
            cwd=ROOT,
            env=cluster_env(self._env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        """Bring the nodes up (or join a running cluster); raises with the tool's output."""
        shares = [a for p in self._share for a in ("--share", str(p))]
        done = self.tool("up", "--nodes", str(len(self.nodes)), *shares, "--holder", self._holder)
        if done.returncode != 0:
            raise RuntimeError(f"cluster up failed ({done.returncode}): {done.stderr.strip()}")

    def release(self) -> None:
        """Tear down unless another live holder (a concurrent pytest session) remains."""
        done = self.tool("down", "--holder", self._holder)
        if done.returncode != 0:
            raise RuntimeError(f"cluster down failed ({done.returncode}): {done.stderr.strip()}")

    def down(self) -> None:
        """Tear down unconditionally."""
        done = self.tool("down")
        if done.returncode != 0:
            raise RuntimeError(f"cluster down failed ({done.returncode}): {done.stderr.strip()}")

    # -- running things ----------------------------------------------------------------------
    def tmpdir(self, name: str) -> Path:
        """A fresh folder under the shared folder (run dirs, datasets)."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.shared))

    def mpirun_cmd(
        self,
        args: Sequence[str],
        ranks_per_node: int = 2,
        module: str | None = "hpcgan.train",
        mpirun_args: Sequence[str] = (),
    ) -> list[str]:
        """The command line of ``python -m module args`` (or ``python args`` when module is
        None) on every node, ranks_per_node ranks each, through the cluster's mpirun."""
        py = [sys.executable, *(["-m", module] if module else []), *args]
        return [str(TOOL), "mpirun", "--ranks-per-node", str(ranks_per_node), "--",
                *mpirun_args, *py]  # fmt: skip

    def mpirun(
        self,
        args: Sequence[str],
        ranks_per_node: int = 2,
        timeout: float = 240,
        env: Mapping[str, str | None] | None = None,
        module: str | None = "hpcgan.train",
        mpirun_args: Sequence[str] = (),
    ) -> subprocess.CompletedProcess:
        """Run mpirun_cmd(...) to the end, captured; a hang past timeout kills mpirun and
        every process it started on the nodes, and raises subprocess.TimeoutExpired."""
        cmd = self.mpirun_cmd(args, ranks_per_node, module, mpirun_args)
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def popen(self, cmd: Sequence[str], env: Mapping[str, str | None] | None = None):
        """Start cmd (e.g. mpirun_cmd(...)) without waiting: for signal tests. Output goes to
        the pipe proc.stdout (stderr merged); use proc.communicate(timeout=...)."""
        return subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_on(
        self,
        node: str,
        cmd: Sequence[str],
        timeout: float = 60,
        env: Mapping[str, str | None] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run cmd inside node (its network, hostname, /tmp, /dev/shm), captured, bounded."""
        return subprocess.run(
            [str(TOOL), "exec", node, "--", *cmd],
            cwd=ROOT,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """cluster_env() for this cluster, updated by extra."""
        return cluster_env({**self._env, **(extra or {})})

    # -- processes ---------------------------------------------------------------------------
    def namespace(self, node: str) -> str:
        """Node's network namespace as /proc/PID/ns/net reads, e.g. 'net:[4026532181]'."""
        return (self.state / node / "netns").read_text().strip()

    def anchor(self, node: str) -> int:
        """The host pid of the process that holds node's namespaces."""
        return int((self.state / node / "pid").read_text())

    def node_path(self, node: str, path: str | Path) -> Path:
        """Where the host reads node's own view of the absolute path (e.g. a file in its
        node-local /tmp): /proc/ANCHOR/root/PATH, which resolves in node's mount namespace."""
        return Path(f"/proc/{self.anchor(node)}/root") / Path(path).relative_to("/")

    def pids_on(self, node: str, pattern: str) -> list[int]:
        """Host pids of the processes in node whose command line (arguments joined by spaces)
        matches the regular expression pattern."""
        net, regex, found = self.namespace(node), re.compile(pattern), []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "net") != net:
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # it exited meanwhile
                continue
            if regex.search(cmdline.strip()):
                found.append(int(entry.name))
        return sorted(found)

    def kill_jobs(self) -> None:
        """SIGKILL every process on the nodes except their anchors (after a hung test)."""
        if not self.state.exists():
            return
        for node in self.nodes:
            try:
                keep = self.anchor(node)
                pids = self.pids_on(node, ".")
            except (OSError, ValueError):
                continue
            for pid in pids:
                if pid != keep:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
