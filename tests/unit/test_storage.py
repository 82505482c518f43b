import os

import boto3
import pyarrow as pa
import pytest

from fer_ray import config, schema, shards, storage


def _round_trip(base):
    uri = storage.join(base, "a", "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.exists(uri) and storage.read_json(uri) == {"x": 1}
    storage.write_json(uri, {"x": 2})  # replace
    assert storage.read_json(uri) == {"x": 2}
    table = pa.table({"v": [1, 2, 3]})
    storage.write_parquet(storage.join(base, "t.parquet"), table)
    assert storage.read_parquet(storage.join(base, "t.parquet")).equals(table)
    assert storage.list_files(base, ".json") == [uri]
    storage.delete(uri)
    assert not storage.exists(uri)
    assert storage.list_files(storage.join(base, "nothing-here")) == []


def test_local_round_trip_and_no_temp_left(tmp_path):
    _round_trip(str(tmp_path))
    _round_trip("file://" + str(tmp_path / "f"))
    leftovers = [n for _, _, files in os.walk(tmp_path) for n in files if n.startswith(".tmp-")]
    assert leftovers == []


def test_s3_round_trip_on_real_endpoint(s3_bucket, s3_server):
    _round_trip(s3_bucket + "/prefix")
    # boto3 sees what pyarrow wrote: the same endpoint from AWS_ENDPOINT_URL
    storage.write_text(s3_bucket + "/hello.txt", "hi")
    client = boto3.client("s3")
    body = client.get_object(Bucket=s3_bucket[5:], Key="hello.txt")["Body"].read()
    assert body == b"hi"


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.read_bytes(str(tmp_path / "none"))
    with pytest.raises(IsADirectoryError):
        storage.read_bytes(str(tmp_path))
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        storage.filesystem("gs://bucket/x")


@pytest.mark.parametrize("video_id", ["../../etc/passwd", "a/b", "name with space", "vidéo", "..", "x" * 300])
def test_safe_key_is_one_safe_component(video_id):
    key = storage.safe_key(video_id)
    assert "/" not in key and ".." not in key and " " not in key
    assert key.isascii() and 0 < len(key) <= 150


def test_safe_key_distinct_ids_distinct_keys():
    assert storage.safe_key("tw_TW01") == "tw_TW01"
    assert storage.safe_key("a/b") != storage.safe_key("a_b")
    assert storage.safe_key("a b") != storage.safe_key("a_b")


def test_shards_done_marker_hides_partial_videos(tmp_path):
    out = str(tmp_path)
    rows = pa.Table.from_pylist(
        [{schema.VIDEO_ID: "v1", schema.FRAME_INDEX: i, schema.LABEL: 0} for i in range(3)])
    part = shards.write_part(out, "faces", "v1", 0, rows)
    shards.write_part(out, "faces", "v2", 0, rows)  # v2 never completes
    assert shards.complete_parts(out, "faces") == []
    shards.write_failure(out, "v1", "x.mp4", "decode", "boom")
    assert shards.read_failures(out).num_rows == 1
    shards.mark_done(out, "faces", "v1", [part], frames=3)
    assert shards.complete_parts(out, "faces") == [part]
    assert shards.done_markers(out, "faces")["v1"]["frames"] == 3
    assert shards.read_failures(out).num_rows == 0  # success clears the old failure


def test_config_loader_validates(tmp_path):
    from dataclasses import dataclass, field
    from typing import Literal

    @dataclass
    class Inner:
        size: int = 112

    @dataclass
    class Job:
        output: str
        system: Literal["cfc_sp", "mao"] = "cfc_sp"
        window: int = 256
        rate: float = 0.5
        inner: Inner = field(default_factory=Inner)

        def validate(self):
            if self.window < 0:
                raise config.ConfigError("window must be >= 0")

    path = tmp_path / "job.yaml"
    path.write_text("output: out\nwindow: 64\nrate: 1\ninner: {size: 128}\n")
    job = config.load(Job, str(path), overrides={"system": "mao", "window": None})
    assert (job.window, job.system, job.rate, job.inner.size) == (64, "mao", 1.0, 128)
    config.save(job, str(tmp_path / "saved.yaml"))
    assert config.load(Job, str(tmp_path / "saved.yaml")) == job
    with pytest.raises(config.ConfigError, match="unknown key.*windw.*valid: output, system"):
        config.load(Job, {"output": "o", "windw": 3})
    with pytest.raises(config.ConfigError, match="'prl' is not one of"):
        config.load(Job, {"output": "o", "system": "prl"})
    with pytest.raises(config.ConfigError, match="expected int"):
        config.load(Job, {"output": "o", "window": "big"})
    with pytest.raises(config.ConfigError, match="window must be >= 0"):
        config.load(Job, {"output": "o", "window": -1})
    with pytest.raises(config.ConfigError, match="output"):
        config.load(Job, {})


def test_an_unchanged_input_list_is_not_rewritten(tmp_path, s3_bucket, s3_server):
    for uri in (str(tmp_path / "inputs" / "labels.csv"), f"{s3_bucket}/inputs/labels.csv"):
        assert storage.write_text_if_changed(uri, "path,label\na.jpg,Neutral\n")
        fs, path = storage.filesystem(uri)
        before = fs.get_file_info(path).mtime_ns
        assert not storage.write_text_if_changed(uri, "path,label\na.jpg,Neutral\n")
        assert fs.get_file_info(path).mtime_ns == before  # so its items keep their fingerprint
        assert storage.write_text_if_changed(uri, "path,label\na.jpg,Anger\n")
        assert storage.read_bytes(uri) == b"path,label\na.jpg,Anger\n"


def test_a_demo_rerun_keeps_its_input_files_as_they_were(tmp_path):
    from fer_ray.inputs import item_fingerprint
    from fer_ray.jobs.demo import DemoConfig, write_inputs
    from tests.conftest import need_shared

    cfg = DemoConfig(data=str(need_shared()), output=str(tmp_path))
    first = write_inputs(cfg)
    fingerprints = [item_fingerprint({schema.URI: uri}) for uri in first]
    assert write_inputs(cfg) == first
    assert [item_fingerprint({schema.URI: uri}) for uri in first] == fingerprints
