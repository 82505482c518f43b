"""Shared fixtures: the shared real data, a real S3 endpoint (moto server on 127.0.0.1), a local Ray cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
# Ray Train's controller polls its workers every 2 s, and a worker's epoch report waits for that poll (a
# one-slot queue): the tests' epochs last about a second. Polling faster changes no result, only the wait.
# No test node is ever preempted, and the preemption watcher is one more process per training run (~2.7 s
# of CPU to start, six runs in the session).
TRAIN_TEST_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
for _key, _value in TRAIN_TEST_ENV.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FER_RAY_DATA", ROOT.parent / "shared" / "data")).resolve()
FAKE_KEY_ID = "AKIAFERRAYTESTKEY0001"
FAKE_SECRET = "fer-ray-test-secret-do-not-leak-0123456789"


def need_shared(*parts: str) -> Path:
    """Path inside ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is missing (set FER_RAY_DATA or place ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def torch_threads(request):
    """torch's intra-op threads in the pytest process, set per test. Unit tests have the machine to themselves
    (no Ray job runs beside them): two threads made the unit modules ~18 % faster on the 2-core box (ABBA,
    120-135 s against 142-168 s). Integration tests keep one: the same process drives Ray and serves S3 while
    jobs take both cores, and spinning intra-op threads stall under such load. Tests that need their own
    count set it inside (test_train_data's local training)."""
    torch = sys.modules.get("torch")  # a test module that needs torch has imported it at collection
    if torch is not None:
        unit = request.node.path.parent.name == "unit"
        torch.set_num_threads(min(2, os.cpu_count() or 1) if unit else 1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def s3_server():
    """A real HTTP S3 endpoint on 127.0.0.1; AWS_* variables point boto3 and pyarrow at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_REGION": "us-east-1",
    })
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket for one test; returns its s3:// URI."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray instance for the session (started after the S3 variables are set, so workers see them)."""
    import ray

    if not ray.is_initialized():
        from fer_ray.runtime import LOCAL_RAY_SYSTEM_CONFIG

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=1_500_000_000, _system_config=LOCAL_RAY_SYSTEM_CONFIG)
        # With log_to_driver=False nothing reads what the log monitor forwards, yet it tails every worker's
        # log file (hundreds over the session): ~35 CPU-seconds of the suite's 2 cores. Workers still write
        # their log files.
        ray._private.worker._global_node.kill_log_monitor()
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------- order
# Unit modules first (no Ray), then the integration modules on the local Ray instance, then those that share
# the 3-node cluster (faults, multinode, security, bad_inputs) and the reference run on the dev data (faults,
# golden, api, calibrate_job), so the cluster's processes never sit idle under the rest of the suite (the
# cluster takes ~6 % of the 2 CPUs while idle, the local instance ~3.5 %).
# (pytest-xdist was measured and gains nothing here: the suite keeps both CPUs ~80 % busy, and two Ray
# instances side by side made each job about twice as slow.)
# test_security last: its scans for credentials read the objects, logs and job records of every cluster job.
LAST = ["test_calibrate_job", "test_api", "test_golden", "test_faults", "test_bad_inputs", "test_multinode",
        "test_security"]


# The modules that use tests/cluster.py's shared cluster. When the suite reaches the first LAST module and one
# of these comes later, the cluster starts in the background (~15 s of start-up beside those tests, ~30 %
# idle, instead of in the first cluster test's setup).
CLUSTER_MODULES = {"test_faults", "test_bad_inputs", "test_multinode", "test_security"}
_EARLY_CLUSTER_AT: str | None = None  # nodeid of the test whose start starts the cluster


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_collection_modifyitems(config, items):
    global _EARLY_CLUSTER_AT

    def rank(item) -> tuple[int, int]:
        module = _module(item)
        if module in LAST:
            return (2, LAST.index(module))
        return (0 if "/unit/" in item.nodeid else 1, 0)

    items.sort(key=rank)  # stable: file order within a module and among same-rank modules
    first_last = next((item for item in items if _module(item) in LAST), None)
    if first_last is not None and _module(first_last) not in CLUSTER_MODULES and \
            any(_module(item) in CLUSTER_MODULES for item in items):
        _EARLY_CLUSTER_AT = first_last.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    # at the call, not the setup: the session's S3 server is up by then (the nodes take its AWS_* variables)
    if item.nodeid == _EARLY_CLUSTER_AT and os.environ.get("AWS_ENDPOINT_URL"):
        from tests.cluster import start_shared_cluster_early

        start_shared_cluster_early()
