"""Shared fixtures: the shared real data, a real S3 endpoint (moto server on 127.0.0.1), a local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

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
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=1_500_000_000)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------- order and grouping (make test: -n 2)
# Modules that share an expensive session resource run on one pytest-xdist worker: the 3-node cluster (faults,
# multinode, security) and the reference run on the dev data (faults, golden, api, calibrate_job). Every
# other module is a group of its own, so a module-scoped fixture runs once. Groups are handed out longest
# first (measured on the 2-core machine), so the two workers finish close together; the unit modules fill in
# at the end. (xdist's own `--dist loadgroup` marks do not group under pytest 9: it renames node ids that
# pytest 9 no longer lets it rename, hence the scheduler below.)
SHARED = {"test_faults", "test_multinode", "test_security", "test_golden", "test_api", "test_calibrate_job"}
LONGEST_FIRST = ["shared", "test_train_all", "test_preprocess_job", "test_bad_inputs", "test_incremental",
                 "test_annotate_job", "test_multi_face", "test_detect_track", "test_gpu_benchmark",
                 "test_s3_faults"]


def group_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return "shared" if module in SHARED else module


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: file order in a group


def pytest_xdist_make_scheduler(config, log):
    """Under -n: whole groups (group_of) to one worker each, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep LONGEST_FIRST, not "most tests first"
    return GroupScheduling(config, log)
