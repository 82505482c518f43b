"""storage on S3 faults beyond clean 5xx answers, through the failing proxy (tests/s3proxy.py, 127.0.0.1) in
front of the moto server: resets mid-body, answers slower than the client timeout, reads that always fail,
uploads cut halfway. Transient faults are survived by retries; permanent ones raise, bounded in time,
without quoting the object; an interrupted upload never leaves a partial object (checked with boto3 on moto
directly, not through the proxy)."""

from __future__ import annotations

import time

import boto3
import pytest

from fer_ray import storage
from tests.s3proxy import FailingS3Proxy, Fault

BODY = b"SECRET_TOKEN=do-not-quote-me\n" + bytes(range(256)) * 800  # ~200 kB: a body that streams


@pytest.fixture
def bucket(s3_bucket, s3_server):
    """(name, boto3 client on moto itself) with one object, `obj`, already there."""
    name = s3_bucket[len("s3://"):]
    client = boto3.client("s3", endpoint_url=s3_server)
    client.put_object(Bucket=name, Key="obj", Body=BODY)
    return name, client


def through(monkeypatch, proxy: FailingS3Proxy, attempts: int = 4, timeout: float = 20) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("FER_RAY_S3_MAX_ATTEMPTS", str(attempts))
    monkeypatch.setenv("FER_RAY_S3_TIMEOUT_S", str(timeout))


def test_reset_mid_body_is_retried_and_never_returns_a_truncated_object(bucket, s3_server, monkeypatch, tmp_path):
    name, _ = bucket
    with FailingS3Proxy(s3_server, faults=[Fault("reset", "GET", rf"^/{name}/obj", times=4)]) as proxy:
        through(monkeypatch, proxy)
        assert storage.read_bytes(f"s3://{name}/obj") == BODY
        local = tmp_path / "copy.bin"
        assert storage.download(f"s3://{name}/obj", str(local)) == len(BODY)
        assert local.read_bytes() == BODY
    assert [k for _, _, k in proxy.failed] == ["reset"] * 4  # the faults did happen, and were survived


def test_a_whole_object_is_one_get_not_one_per_256_kb(bucket, s3_server, monkeypatch):
    """read_bytes of a 3 MB object asks S3 once for the body (a bare stream read() went in 256 kB requests:
    a 39 MB checkpoint took ~150), and still returns every byte."""
    name, client = bucket
    body = bytes(range(256)) * (3 << 12)
    client.put_object(Bucket=name, Key="big", Body=body)
    with FailingS3Proxy(s3_server) as proxy:
        through(monkeypatch, proxy)
        assert storage.read_bytes(f"s3://{name}/big") == body
    assert proxy.requests <= 3, proxy.requests  # HEADs for the size, one GET


def test_answer_slower_than_the_timeout_is_abandoned_and_retried(bucket, s3_server, monkeypatch):
    name, _ = bucket
    with FailingS3Proxy(s3_server, faults=[Fault("slow", "GET", rf"^/{name}/obj", times=1, delay=6)]) as proxy:
        through(monkeypatch, proxy, timeout=1)
        start = time.monotonic()
        assert storage.read_bytes(f"s3://{name}/obj") == BODY
        elapsed = time.monotonic() - start
    assert proxy.kinds() == {"slow"} and elapsed < 5, elapsed  # gave up after ~1 s, not after the 6 s answer


def test_hung_endpoint_fails_in_bounded_time(bucket, s3_server, monkeypatch):
    name, _ = bucket
    with FailingS3Proxy(s3_server, faults=[Fault("slow", "GET", rf"^/{name}/obj", times=None, delay=30)]) as proxy:
        through(monkeypatch, proxy, attempts=2, timeout=1)
        start = time.monotonic()
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            storage.read_bytes(f"s3://{name}/obj")
        elapsed = time.monotonic() - start
    assert 2 <= len(proxy.failed) <= 4 and elapsed < 15, (len(proxy.failed), elapsed)


def test_read_that_always_fails_raises_without_quoting_the_object(bucket, s3_server, monkeypatch):
    name, _ = bucket
    with FailingS3Proxy(s3_server, faults=[Fault("reset", "GET", rf"^/{name}/obj", times=None)]) as proxy:
        through(monkeypatch, proxy, attempts=2)
        with pytest.raises(OSError) as info:
            storage.read_bytes(f"s3://{name}/obj")
    assert len(proxy.failed) == 4  # 2 SDK attempts x 2 attempts here: bounded
    assert "SECRET_TOKEN" not in str(info.value) and "do-not-quote" not in str(info.value)


def _objects(client, name: str) -> dict[str, int]:
    return {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])}


@pytest.mark.parametrize("size", [100_000, 12_000_000])  # one PutObject; a multipart upload
def test_upload_cut_halfway_is_retried_whole(bucket, s3_server, monkeypatch, size):
    name, client = bucket
    data = bytes(range(256)) * (size // 256)
    with FailingS3Proxy(s3_server, faults=[Fault("cut", "PUT", rf"^/{name}/new", times=1)]) as proxy:
        through(monkeypatch, proxy)
        storage.write_bytes(f"s3://{name}/new", data)
    assert proxy.kinds() == {"cut"}
    assert client.get_object(Bucket=name, Key="new")["Body"].read() == data
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_upload_cut_every_time_fails_cleanly_and_leaves_no_partial_object(bucket, s3_server, monkeypatch):
    name, client = bucket
    new = b"NEW" * 50_000
    with FailingS3Proxy(s3_server, faults=[Fault("cut", "PUT", rf"^/{name}/", times=None)]) as proxy:
        through(monkeypatch, proxy, attempts=2)
        for key in ("fresh", "obj"):  # a new object; a replacement of an existing one
            with pytest.raises(OSError):
                storage.write_bytes(f"s3://{name}/{key}", new)
    assert len(proxy.failed) == 8
    assert _objects(client, name) == {"obj": len(BODY)}  # nothing new visible, the old object intact
    assert client.get_object(Bucket=name, Key="obj")["Body"].read() == BODY
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_timeout_setting_is_validated(monkeypatch):
    monkeypatch.setenv("FER_RAY_S3_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="FER_RAY_S3_TIMEOUT_S"):
        storage.s3_timeout_s()
