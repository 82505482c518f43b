"""A real multi-node Ray cluster on one machine (127.0.0.1), for the multi-node, fault and security tests.

    cluster = LocalCluster(env={"AWS_ACCESS_KEY_ID": ...})   # the nodes' environment (like an instance role)
    cluster.start_head(num_cpus=0)                           # head: GCS, dashboard + job server, no work
    cluster.add_worker("w1", num_cpus=2); cluster.add_worker("w2", num_cpus=2)
    job = cluster.submit("python jobs/preprocess.py --input ... --output ...")
    cluster.wait(job)                                        # -> JobResult(status, logs)
    cluster.kill("w2")                                       # SIGKILL that node's processes (a lost machine)
    cluster.stop()                                           # only this cluster's processes

Every node is `ray start --block` in its own session (process group), so stopping or killing a node signals
exactly the processes it started (raylet, its workers, agents; GCS and dashboard on the head): never
`ray stop`, which would take down every other Ray instance on a shared machine. Each node has its own
`--temp-dir` (Ray 2.60 supports one per node, also on one machine: each node gets its own session_*/logs)
and its own port block, chosen free at start; the dashboard/job server binds to 127.0.0.1.
Nodes are told apart by a custom resource `fer_node_<name>` (their IPs are all 127.0.0.1).
"""

from __future__ import annotations

import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TRAIN_TEST_ENV

ROOT = Path(__file__).resolve().parents[1]
PORTS_PER_NODE = 8
WORKER_PORTS = 60  # worker gRPC ports per node
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _port_block(size: int) -> int:
    """The first of `size` consecutive free ports in 20000..55000 (random start: no clash with neighbours)."""
    for _ in range(200):
        base = random.randrange(20000, 55000 - size)
        if all(_free(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


@dataclass
class Node:
    name: str
    temp_dir: Path
    process: subprocess.Popen
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"fer_node_{self.name}"

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class JobResult:
    job_id: str
    status: str
    logs: str
    seconds: float


class LocalCluster:
    def __init__(self, env: dict[str, str] | None = None, root: str | Path | None = None):
        # short root: Ray's unix sockets live under it and must stay under 107 characters
        self.root = Path(root or tempfile.mkdtemp(prefix="frc-", dir="/tmp"))
        # this cluster's own auth token (Ray 2.60 turns token auth on by default): the dashboard, job server and
        # GCS refuse anyone without it, and nothing here depends on a ~/.ray/auth_token shared with neighbours
        self.token = secrets.token_hex(32)
        self.env = self._base_env() | dict(env or {}) | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.nodes: dict[str, Node] = {}
        self.gcs_port = self.dashboard_port = None
        self._client = None

    @staticmethod
    def _base_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        # "0" here would mean "no multi-node": Ray reads this variable as ENABLE_RAY_CLUSTER on every OS, and
        # `ray start --address` aborts with "Multi-node Ray clusters are not supported on Windows and OSX"
        env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_USAGE_STATS_ENABLED="0", TQDM_DISABLE="1",
                   PYTHONUNBUFFERED="1",
                   # a loaded machine: the raylet aborts when its agents take longer than this to start
                   RAY_agent_register_timeout_ms="120000",
                   # idle workers kept a minute, as fer_ray.runtime's local instance does (a job's next burst
                   # of tasks reuses them instead of starting processes); 4 a node, as each node has 2 CPUs
                   RAY_idle_worker_killing_time_threshold_ms="60000", RAY_num_workers_soft_limit="4")
        env.update(TRAIN_TEST_ENV)  # as the session's local Ray (tests/conftest.py)
        env.pop("PYTHONPATH", None)
        return env

    # ------------------------------------------------------------------ nodes
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str], num_cpus: float, resources: dict | None,
               object_store: int) -> Node:
        import json

        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        base = _port_block(PORTS_PER_NODE + WORKER_PORTS)
        ports = {"node_manager": base, "object_manager": base + 1, "agent_listen": base + 2,
                 "agent_grpc": base + 3, "metrics": base + 4, "runtime_env_agent": base + 5}
        resources = {f"fer_node_{name}": 100, **(resources or {})}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", *args,
               "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
               "--num-cpus", str(num_cpus), "--num-gpus", "0", "--resources", json.dumps(resources),
               "--object-store-memory", str(object_store),
               "--node-manager-port", str(ports["node_manager"]),
               "--object-manager-port", str(ports["object_manager"]),
               "--dashboard-agent-listen-port", str(ports["agent_listen"]),
               "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
               "--metrics-export-port", str(ports["metrics"]),
               "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
               "--min-worker-port", str(base + PORTS_PER_NODE),
               "--max-worker-port", str(base + PORTS_PER_NODE + WORKER_PORTS - 1),
               "--disable-usage-stats", "--log-style", "record",
               # The log monitor only forwards workers' output to drivers that ask for it (log_to_driver), and
               # our jobs don't unless --verbose. It still tails every worker's log file: ~5 CPU-seconds a node
               # over the session. Workers keep writing their log files, which test_security scans.
               "--include-log-monitor", "false"]
        log = self.root / f"{name}.start.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.root))
        node = Node(name, temp_dir, process, log, ports)
        self.nodes[name] = node
        return node

    def start_head(self, num_cpus: float = 0, resources: dict | None = None, object_store: int = 200 << 20,
                   timeout: float = 180, attempts: int = 4) -> Node:
        """The head (GCS, dashboard + job server on 127.0.0.1). On a loaded machine Ray's own startup can time
        out ("The current node timed out during startup"): then that try's processes are killed and it retries."""
        for attempt in range(1, attempts + 1):
            base = _port_block(3)
            self.gcs_port, self.dashboard_port, client_port = base, base + 1, base + 2
            node = self._start("head", ["--head", "--port", str(self.gcs_port),
                                        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                        "--dashboard-port", str(self.dashboard_port),
                                        "--ray-client-server-port", str(client_port)],
                               num_cpus, resources, object_store)
            try:
                self._wait_for(lambda: self._dashboard_up(), timeout, f"head node (log {node.log})", node)
                self._wait_for(lambda n=node: n.resource in self.node_ids(), timeout, "head node registration", node)
                return node
            except (RuntimeError, TimeoutError):
                self.kill("head")
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def add_worker(self, name: str, num_cpus: float = 2, resources: dict | None = None,
                   object_store: int = 400 << 20, timeout: float = 180, attempts: int = 4) -> Node:
        for attempt in range(1, attempts + 1):
            node = self._start(name, ["--address", self.address], num_cpus, resources, object_store)
            try:
                self._wait_for(lambda n=node: n.resource in self.node_ids(), timeout,
                               f"node {name} (log {node.log})", node)
                return node
            except (RuntimeError, TimeoutError):
                self.kill(name)
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _wait_for(self, check, timeout: float, what: str, node: Node | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node is not None and not node.alive():
                raise RuntimeError(f"{what}: `ray start` exited with {node.process.returncode}:\n"
                                   + node.log.read_text(errors="replace")[-3000:])
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(1.0)
        raise TimeoutError(f"{what} not up after {timeout:.0f}s")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, auth: bool = True, timeout: float = 30):
        """GET a dashboard endpoint; returns (HTTP status, parsed JSON or text)."""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.dashboard_url}{path}", headers=self.headers if auth else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, body = response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode("utf-8", "replace")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def _dashboard_up(self) -> bool:
        return self.get("/api/version", timeout=5)[0] == 200

    def state(self, kind: str, limit: int = 10000, **filters) -> list[dict]:
        """The state API (`ray list tasks|actors|nodes`) over the dashboard's REST endpoint /api/v0/<kind>."""
        from urllib.parse import urlencode

        query = [("limit", limit), ("detail", "true")]
        for key, value in filters.items():
            query += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        status, body = self.get(f"/api/v0/{kind}?{urlencode(query)}")
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"state API {kind}: HTTP {status}: {str(body)[:500]}")
        return body["data"]["result"]["result"]

    def node_ids(self, alive_only: bool = True) -> dict[str, str]:
        """fer_node_<name> resource -> Ray node id, from the state API."""
        out = {}
        for node in self.state("nodes"):
            if alive_only and node["state"] != "ALIVE":
                continue
            for key in (node.get("resources_total") or {}):
                if key.startswith("fer_node_"):
                    out[key] = node["node_id"]
        return out

    def node_names_by_id(self) -> dict[str, str]:
        """Ray node id -> our node name, for every node that ever joined (dead ones too)."""
        return {node_id: key[len("fer_node_"):] for key, node_id in self.node_ids(alive_only=False).items()}

    def kill(self, name: str) -> None:
        """A lost machine: SIGKILL every process of that node (its process group), nothing else."""
        node = self.nodes[name]
        try:
            os.killpg(node.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.process.wait(timeout=30)

    def stop(self, keep_logs: bool = False) -> None:
        """SIGTERM each node's process group (workers first, head last), then SIGKILL what is left."""
        order = [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else [])
        for name in order:
            node = self.nodes[name]
            try:
                os.killpg(node.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                node.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for name in order:  # `ray start --block` is gone; its children may not be
            try:
                os.killpg(self.nodes[name].process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ logs and sockets
    def session_log_files(self) -> list[Path]:
        """Every file under every node's session_*/logs."""
        return sorted(p for p in self.root.glob("*/session_*/logs/**/*") if p.is_file())

    def pids(self) -> set[int]:
        """Processes of this cluster: the members of its nodes' process groups (from /proc)."""
        groups = {n.process.pid for n in self.nodes.values() if n.alive()}
        out = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in groups:  # fields after "(comm)": state, ppid, pgrp, ...
                out.add(int(stat.parent.name))
        return out

    def listening(self) -> list[tuple[str, int, int]]:
        """(ip, port, pid) of every TCP socket this cluster's processes listen on (`ss -ltnp`)."""
        import re

        text = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        mine = self.pids()
        out = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 6:
                continue
            ip, _, port = fields[3].rpartition(":")
            for pid in map(int, re.findall(r"pid=(\d+)", line)):
                if pid in mine:
                    out.append((ip.strip("[]"), int(port), pid))
        return sorted(set(out))

    # ------------------------------------------------------------------ jobs
    @property
    def client(self):
        from ray.job_submission import JobSubmissionClient

        if self._client is None:
            self._client = JobSubmissionClient(self.dashboard_url, headers=self.headers)
        return self._client

    def working_dir(self) -> Path:
        """What `--working-dir .` uploads, minus what does not belong in a job package: a copy of the checkout's
        code (fer_ray/, jobs/, configs/, pyproject.toml as they are now). The checkout itself can hold other
        people's run outputs (checkpoints, ...) that .gitignore alone does not keep under Ray's 100 MiB limit."""
        target = self.root / "wd"
        if not target.exists():
            skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt", "*.pth", "*.ckpt", "*.parquet")
            for name in ("fer_ray", "jobs", "configs"):
                shutil.copytree(ROOT / name, target / name, ignore=skip)
            shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")
        return target

    def submit(self, entrypoint: str | list[str], env_vars: dict[str, str] | None = None,
               working_dir: str | Path | None = None) -> str:
        """`ray job submit --working-dir <checkout copy> -- <entrypoint>` through the job server's REST API."""
        if not isinstance(entrypoint, str):
            entrypoint = shlex.join(entrypoint)
        runtime_env = {"working_dir": str(working_dir or self.working_dir())}
        if env_vars:
            runtime_env["env_vars"] = dict(env_vars)
        return self.client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)

    def status(self, job_id: str) -> str:
        return str(self.client.get_job_status(job_id).value)

    def wait(self, job_id: str, timeout: float = 300, poll: float = 0.5, on_poll=None) -> JobResult:
        """Wait for a job to end; `on_poll(status)` runs every poll (fault injection). Stops it on timeout."""
        start = time.monotonic()
        status = self.status(job_id)
        while status not in TERMINAL:
            if time.monotonic() - start > timeout:
                self.client.stop_job(job_id)
                raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f}s:\n"
                                   + self.client.get_job_logs(job_id)[-5000:])
            if on_poll is not None:
                try:
                    on_poll(status)
                except BaseException:
                    self.client.stop_job(job_id)
                    raise
            time.sleep(poll)
            status = self.status(job_id)
        return JobResult(job_id, status, self.client.get_job_logs(job_id), time.monotonic() - start)

    def ray_job_id(self, submission_id: str) -> str:
        """The Ray job id (hex) of a submission's driver: what the state API's tasks and actors carry."""
        return self.client.get_job_info(submission_id).job_id

    def placements(self, submission_id: str) -> list[dict]:
        """Where a job's work ran: {kind: task|actor, name, node, node_id, state} for each of its tasks
        (normal and actor tasks) and actors, from the state API; `node` is our node name."""
        job_id = self.ray_job_id(submission_id)
        if not job_id:  # the driver has not started yet
            return []
        names = self.node_names_by_id()
        out = []
        for task in self.state("tasks", job_id=job_id):
            if task.get("node_id"):
                out.append({"kind": "task", "name": task["name"], "node_id": task["node_id"],
                            "node": names.get(task["node_id"]), "state": task["state"]})
        for actor in self.state("actors", job_id=job_id):
            if actor.get("node_id"):
                out.append({"kind": "actor", "name": actor["class_name"], "node_id": actor["node_id"],
                            "node": names.get(actor["node_id"]), "state": actor["state"]})
        return out

    def run(self, entrypoint, env_vars=None, timeout: float = 300, on_poll=None) -> JobResult:
        return self.wait(self.submit(entrypoint, env_vars), timeout=timeout, on_poll=on_poll)

    def run_side_by_side(self, entrypoints: list, env_vars=None,
                         timeout: float | list[float] = 300) -> list[JobResult]:
        """Jobs that read nothing the others write: all submitted, then each waited for (`timeout`, or one per
        job, from the end of the wait before it); their results in order."""
        jobs = [self.submit(entrypoint, env_vars) for entrypoint in entrypoints]
        timeouts = timeout if isinstance(timeout, list) else [timeout] * len(jobs)
        return [self.wait(job, timeout=limit) for job, limit in zip(jobs, timeouts, strict=True)]


def job_command(script: str, *args: str) -> str:
    """`python jobs/<script> args...`, quoted for the job's shell (paths may hold spaces)."""
    return shlex.join(["python", f"jobs/{script}", *map(str, args)])


# ---------------------------------------------------------------------- one cluster for the whole test session
_SHARED: LocalCluster | None = None
_STARTING: threading.Thread | None = None
WORKER_CPUS = 2  # logical CPUs per worker node (may exceed the machine's cores)


def start_shared_cluster_early() -> None:
    """Start the session's cluster in a background thread, so it boots beside the tests that run before its
    first user (~15 s of process start-up, mostly one process at a time) instead of in that user's setup.
    The next shared_cluster() call waits for it; if the start failed, that call starts it again and raises
    its error."""
    global _STARTING
    if _SHARED is None and _STARTING is None:
        _STARTING = threading.Thread(target=_start_quietly, name="shared-cluster-start", daemon=True)
        _STARTING.start()


def _start_quietly() -> None:
    try:
        _shared_cluster()
    except BaseException:  # noqa: BLE001 - shared_cluster() on the test's own thread retries and raises
        pass


def shared_cluster(workers: int = 2) -> LocalCluster:
    """The session's cluster: a head with no CPUs (it only hosts GCS, dashboard, job server and drivers) and
    `workers` worker nodes with WORKER_CPUS each, so every task and actor of a job runs on a worker node.
    Started on first use (or by start_shared_cluster_early) with the AWS_* variables of this process (the
    nodes' "instance role"); a worker a test killed is replaced by a fresh node. Stopped at interpreter exit
    (only its own processes)."""
    global _STARTING
    if _STARTING is not None:
        _STARTING.join()
        _STARTING = None
    return _shared_cluster(workers)


def _shared_cluster(workers: int = 2) -> LocalCluster:
    import atexit

    global _SHARED
    if _SHARED is not None and not _SHARED.nodes["head"].alive():
        _SHARED.stop()
        _SHARED = None
    if _SHARED is None:
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        cluster = LocalCluster(env=env)
        atexit.register(cluster.stop)
        try:
            cluster.start_head(num_cpus=0)
        except BaseException:
            cluster.stop(keep_logs=True)
            raise
        _SHARED = cluster
    alive = [n for n in _SHARED.nodes.values() if n.name != "head" and n.alive()]
    number = len(_SHARED.nodes)
    while len(alive) < workers:
        alive.append(_SHARED.add_worker(f"w{number}", num_cpus=WORKER_CPUS))
        number += 1
    return _SHARED


def worker_names(cluster: LocalCluster) -> list[str]:
    return sorted(n.name for n in cluster.nodes.values() if n.name != "head" and n.alive())


def node_killer(cluster: LocalCluster, job_id: str, output: str, stage: str = "LogitsStage"):
    """`on_poll` for cluster.wait(job_id) of an annotate job writing to `output`: once a `stage` task of the
    job has finished, SIGKILL the node it ran on (a lost machine) and start a replacement node (like an
    autoscaler). Returns (on_poll, killed): `killed` records the node, how many videos had their predictions
    done before, and when."""
    from fer_ray import shards
    from fer_ray.infer.postprocess import PREDICTIONS

    killed: dict = {}

    def on_poll(status: str) -> None:
        if killed or status != "RUNNING":
            return
        finished = [w for w in cluster.placements(job_id) if stage in w["name"] and w["kind"] == "task"
                    and w["state"] == "FINISHED"]
        if not finished:
            return
        victim = finished[0]["node"]
        killed.update(node=victim, finished_before=len(finished),
                      done_before=len(shards.done_markers(output, PREDICTIONS)), at=time.monotonic())
        cluster.kill(victim)
        killed["replacement"] = sorted(set(worker_names(shared_cluster())) - {victim})

    return on_poll, killed


# ---------------------------------------------------------------------- the documented command lines
CLUSTER_README = ROOT / "cluster" / "README.md"
_SHELL_ENDS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "&"}


@dataclass
class JobLine:
    """One `python jobs/<job>.py args...` command line of a code block in cluster/README.md."""

    section: str          # the number of the `## N.` heading it is under ("2")
    job: str              # "preprocess"
    args: list[str]       # shlex-split, after the script
    submitted: bool       # run through `ray job submit`


def _job_calls(tokens: list[str]) -> list[tuple[list[str], bool]]:
    """(args, submitted) of every `python jobs/x.py ...` in one shell line's tokens (quoted `bash -c`
    strings are split again)."""
    out = []
    for i, token in enumerate(tokens):
        if " " in token and "python jobs/" in token:  # a quoted command: bash -lc '... python jobs/x.py ...'
            out += _job_calls(shlex.split(token, comments=True))
        elif token == "python" and i + 1 < len(tokens) and tokens[i + 1].startswith("jobs/"):
            rest = tokens[i + 1:]
            end = next((k for k, t in enumerate(rest) if t in _SHELL_ENDS), len(rest))
            out.append((rest[:end], "submit" in tokens[:i]))
    return out


def readme_jobs(text: str | None = None) -> list[JobLine]:
    """Every job command line in the ```bash / ```cron blocks of cluster/README.md, in order."""
    import re

    text = CLUSTER_README.read_text(encoding="utf-8") if text is None else text
    lines, section, in_block = [], "", False
    for raw in text.splitlines():
        stripped = raw.strip()
        heading = re.match(r"##\s+(\d+)\.", raw)
        if heading and not in_block:
            section = heading.group(1)
        if stripped.startswith("```"):
            in_block = not in_block and stripped[3:] in ("bash", "cron", "sh")
            continue
        if in_block:
            lines.append((section, raw))
    joined: list[tuple[str, str]] = []  # backslash continuations joined
    for section, raw in lines:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + raw.strip())
        else:
            joined.append((section, raw.strip()))
    out = []
    for section, line in joined:
        for args, submitted in _job_calls(shlex.split(line, comments=True)):
            job = Path(args[0]).stem
            out.append(JobLine(section, job, args[1:], submitted))
    return out
