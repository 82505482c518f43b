"""Fixtures shared by integration modules: the reference run on the fixed dev input (tests/golden.py)."""

from __future__ import annotations

import pytest

from tests import golden
from tests.conftest import SHARED_DATA, need_shared


@pytest.fixture(scope="session")
def dev_reference(s3_server, ray_local) -> str:
    """tests/golden.py's inputs on S3 and the clean run of preprocess -> annotate -> evaluate (in-process,
    local Ray) under s3://reference/ref/{pre,ann,eval}: the golden test's subject and the fault tests'
    reference. Returns the base URI."""
    import boto3

    from tests.helpers import load_job

    for rel in golden.VIDEOS.values():
        need_shared("videos", rel)
    boto3.client("s3").create_bucket(Bucket=golden.BUCKET)
    base = f"s3://{golden.BUCKET}"
    golden.place_inputs(base, SHARED_DATA)
    golden.run_jobs(base, load_job)
    return base
