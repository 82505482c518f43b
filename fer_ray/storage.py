"""One way to open any URI: local paths, file:// and s3://bucket/prefix, through pyarrow filesystems.

S3 endpoint, region and credentials come from the standard AWS environment variables
(AWS_ENDPOINT_URL[_S3], AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, ...) or the instance role,
so the same code talks to AWS or to a local S3 server. Credentials are never logged or written.

Writes are atomic: locally a temp file in the target directory is renamed over the target; on S3 the
whole object is sent in one request from memory (one PutObject; larger ones a multipart upload that only
becomes an object when completed), so a reader sees the old object or the new one, never a part.

S3 faults: every request has a timeout (FER_RAY_S3_TIMEOUT_S, default 20 s without a byte received;
connecting: at most 10 s), so a hung endpoint cannot hang a job; the AWS SDK retries error answers,
resets and timeouts (FER_RAY_S3_MAX_ATTEMPTS, default 8), and reads, writes and downloads retry once more
here, bounded, on the transient errors that escape it (a reset or timeout while the body streams, a short
body). A fault that never clears raises; the jobs turn that into a failure row for the one video.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_FS_CACHE: dict[tuple, pafs.FileSystem] = {}
_LOCK = threading.Lock()
S3_MAX_ATTEMPTS = int(os.environ.get("FER_RAY_S3_MAX_ATTEMPTS", "8"))  # the default; read again per use
S3_TIMEOUT_S = float(os.environ.get("FER_RAY_S3_TIMEOUT_S", "20"))


def s3_max_attempts() -> int:
    return max(1, int(os.environ.get("FER_RAY_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS)))


def s3_timeout_s() -> float:
    """Seconds an S3 request may go without receiving a byte before it is abandoned (and retried)."""
    value = float(os.environ.get("FER_RAY_S3_TIMEOUT_S", S3_TIMEOUT_S))
    if not value > 0:
        raise ValueError(f"FER_RAY_S3_TIMEOUT_S must be > 0 seconds, got {value}")
    return value


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def _s3_filesystem() -> pafs.FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    timeout, attempts = s3_timeout_s(), s3_max_attempts()
    key = ("s3", endpoint, region, timeout, attempts)
    with _LOCK:
        if key not in _FS_CACHE:
            kwargs = {
                "region": region,
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
                "request_timeout": timeout,
                "connect_timeout": min(timeout, 10.0),
                # small objects go in one PutObject; no multipart upload is opened (or left behind) for them
                "allow_delayed_open": True,
            }
            if endpoint:
                parsed = urlparse(endpoint)
                kwargs["endpoint_override"] = parsed.netloc or parsed.path
                kwargs["scheme"] = parsed.scheme or "https"
                kwargs["force_virtual_addressing"] = False
            _FS_CACHE[key] = pafs.S3FileSystem(**kwargs)
        return _FS_CACHE[key]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for a URI and the path inside it."""
    uri = str(uri)
    if is_s3(uri):
        return _s3_filesystem(), uri[len("s3://"):].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}; use a local path, file:// or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def absolute(uri: str) -> str:
    """Local paths made absolute (s3:// and file:// URIs unchanged): Ray Tune runs each trial in its own
    working directory, so a path relative to where the job started would point somewhere else there."""
    uri = str(uri)
    if not uri or "://" in uri:
        return uri
    return os.path.abspath(uri)


def join(uri: str, *parts: str) -> str:
    out = str(uri).rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def stem(uri: str) -> str:
    name = basename(uri)
    return name.rsplit(".", 1)[0] if "." in name else name


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    return int(info.size or 0)


def modified(uri: str):
    """Last-modified time (timezone-aware datetime) of a file."""
    import datetime as dt

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file: {uri}")
    mtime = info.mtime
    return mtime if mtime.tzinfo else mtime.replace(tzinfo=dt.timezone.utc)


def _to_uri(uri: str, path: str) -> str:
    """A path inside the filesystem back to a URI of the same scheme as `uri`."""
    if is_s3(uri):
        return f"s3://{path}"
    return f"file://{path}" if str(uri).startswith("file://") else path


def list_files(uri: str, suffix: str | tuple[str, ...] = "", recursive: bool = True) -> list[str]:
    """Sorted URIs of the files under a prefix (empty when it does not exist), hidden temp files excluded."""
    fs, path = filesystem(uri)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name.startswith(".tmp-"):
            continue
        if suffix and not info.path.lower().endswith(suffix):
            continue
        found.append(_to_uri(uri, info.path))
    return sorted(found)


# Transient S3 errors that reach us despite the SDK's retry strategy (the list Ray Data retries on too):
# an error answer to a ranged GetObject surfaces as "INTERNAL_FAILURE ... Failed to flush response stream";
# a reset or a timeout while the body streams as NETWORK_CONNECTION (curl 56 / 18 / 28).
_TRANSIENT = ("AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
              "AWS Error UNKNOWN (HTTP status 5", "AWS Error REQUEST_TIMEOUT", "curlCode: 28", "curlCode: 56",
              "curlCode: 18", "Connection reset", "short read")


def _retrying(uri: str, action):
    """action() again on a transient S3 error, a bounded number of times with backoff; anything else raises."""
    attempts = s3_max_attempts() if is_s3(uri) else 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except OSError as exc:
            if attempt == attempts or not any(t in str(exc) for t in _TRANSIENT):
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
    raise AssertionError("unreachable")


def _file_info(uri: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    fs, path = filesystem(uri)
    info = _retrying(uri, lambda: fs.get_file_info(path))
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file: {uri}")
    if info.type == pafs.FileType.Directory:
        raise IsADirectoryError(f"is a directory, not a file: {uri}")
    return fs, path, info


def _check_length(uri: str, fs: pafs.FileSystem, path: str, expected: int | None, got: int) -> None:
    """A body shorter than the object is a fault (retried), unless the object was replaced meanwhile."""
    if not is_s3(uri) or expected is None or got >= expected or fs.get_file_info(path).size == got:
        return
    raise OSError(f"short read of {uri}: {got} of {expected} bytes")


def read_bytes(uri: str) -> bytes:
    fs, path, info = _file_info(uri)

    def read() -> bytes:
        with fs.open_input_stream(path) as stream:
            if info.size is None:
                data = stream.read()
            else:
                # One ranged GET for the whole object: a bare read() asks S3 for 256 kB at a time (a 39 MB
                # checkpoint took ~150 requests). The extra byte and the rest: an object replaced meanwhile
                # by a longer one is read whole, as before.
                data = stream.read(info.size + 1)
                if len(data) > info.size:
                    data += stream.read()
        _check_length(uri, fs, path, info.size, len(data))  # never a truncated object
        return data

    return _retrying(uri, read)


def download(uri: str, local_path: str, chunk: int = 8 * 1024 * 1024) -> int:
    """Stream a file to a local path (not held in memory), restarting from scratch on a transient S3 error;
    returns the bytes written."""
    fs, path, info = _file_info(uri)

    def copy() -> int:
        written = 0
        with fs.open_input_stream(path) as src, open(local_path, "wb") as dst:
            while block := src.read(chunk):
                dst.write(block)
                written += len(block)
        _check_length(uri, fs, path, info.size, written)
        return written

    return _retrying(uri, copy)


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically create or replace one object."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if is_s3(uri):
        def put() -> None:  # the whole object again: a PUT interrupted halfway never becomes an object
            with fs.open_output_stream(path) as out:
                out.write(data)

        _retrying(uri, put)
        return
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{basename(path)}"
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(uri: str):
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_text_if_changed(uri: str, text: str) -> bool:
    """write_text unless `uri` already holds exactly `text`; whether it wrote. For input lists a job writes
    on every run (a manifest, a labels.csv): an unchanged one keeps its modification time, so the items read
    from it keep their fingerprint and a rerun skips them."""
    data = text.encode("utf-8")
    try:
        if read_bytes(uri) == data:
            return False
    except FileNotFoundError:
        pass
    write_bytes(uri, data)
    return True


def write_parquet(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(uri)), columns=columns)


def read_parquet_many(uris: list[str], columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    tables = [read_parquet(u, columns) for u in uris]
    if not tables:
        if schema is None:
            raise ValueError("no files to read and no schema to build an empty table from")
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pa.concat_tables(tables, promote_options="default")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
KEY_MARK = "~"  # only encoded keys contain it: a plain id can never equal an encoded one
_PLAIN_MAX = 120


def safe_key(video_id: str) -> str:
    """A video id made safe as one object-key / file-name component, injectively.

    A plain id ([A-Za-z0-9._-], no leading/trailing '.' or '_', no '..', at most 120 characters) is its
    own key, so ordinary ids keep their keys. Any other id becomes a readable cleaned prefix, '~' and 64
    bits of the SHA-256 of the original id: '~' is outside the plain alphabet, so an encoded key never
    equals a plain one, and two encoded keys coincide only if their ids' hashes do.
    """
    text = str(video_id)
    cleaned = _UNSAFE.sub("_", text).strip("._")
    cleaned = re.sub(r"\.{2,}", "_", cleaned)
    if text and cleaned == text and len(text) <= _PLAIN_MAX:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{cleaned[:_PLAIN_MAX].rstrip('.') or 'video'}{KEY_MARK}{digest}"
