"""fer_ray.inputs: work items from manifests, directories / S3 prefixes and labelled image sets."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from fer_ray import inputs, labels, schema, shards, storage
from tests.conftest import need_shared


def write_manifest(path, rows, header=("video_id", "uri", "label_uri")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def by_id(result):
    return {item[schema.VIDEO_ID]: item for item in result.items}


def test_manifest_relative_uris_duplicates_and_empty_fields(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = write_manifest(tmp_path / "sub" / "manifest.csv", [
        ("a", "a.mp4", "a.txt"),
        ("b", "../videos/b.mov", ""),
        ("c", "/abs/c.mp4", "s3://bucket/labels/c.txt"),
        ("dup", "x.mp4", ""),
        ("", "nameless.mp4", ""),
        ("nouri", "", ""),
        ("dup", "y.mp4", ""),
        ("../escape", "e.mp4", ""),
    ])
    result = inputs.from_manifest(manifest, allowed_roots=[tmp_path / "videos", "/abs", "s3://bucket/labels"])
    items = by_id(result)
    assert set(items) == {"a", "b", "c", "../escape"}
    assert items["a"][schema.URI] == str(tmp_path / "sub" / "a.mp4")
    assert items["a"][schema.LABEL_URI] == str(tmp_path / "sub" / "a.txt")
    assert items["b"][schema.URI] == str(tmp_path / "videos" / "b.mov") and items["b"][schema.LABEL_URI] is None
    assert items["c"][schema.URI] == "/abs/c.mp4" and items["c"][schema.LABEL_URI] == "s3://bucket/labels/c.txt"
    assert all(item[schema.KIND] == "video" and item[inputs.MEMBERS] == [] for item in result.items)
    errors = {r[schema.VIDEO_ID]: r[schema.ERROR] for r in result.rejected}
    assert "duplicate video_id 'dup'" in errors["dup"] and "rows 5, 8" in errors["dup"]
    assert "empty uri" in errors["nouri"]
    assert any("empty video_id" in e for e in errors.values())
    assert all(r[schema.STAGE] == "inputs" for r in result.rejected)


def test_manifest_parquet_with_images_and_s3_base(tmp_path):
    frame = pd.DataFrame({"video_id": ["v", "img"], "uri": ["v.mp4", "faces/1.png"],
                          "label_uri": [None, None], "kind": ["video", "face_crop"],
                          "label": ["", "happy"], "subject": ["S1", "S2"]})
    path = tmp_path / "m.parquet"
    frame.to_parquet(path)
    assert inputs.from_manifest(str(path)).rejected == []
    items = by_id(inputs.from_manifest(str(path)))
    assert items["v"][schema.SUBJECT] == "S1" and items["v"][schema.LABEL] == labels.UNANNOTATED
    image = items["img"]
    assert image[schema.KIND] == "face_crop" and image[schema.LABEL] == labels.class_index("Happiness")
    assert image[inputs.MEMBERS] == [{schema.VIDEO_ID: "img", schema.URI: str(tmp_path / "faces" / "1.png"),
                                      schema.LABEL: 4, schema.SUBJECT: "S2"}]
    assert inputs.resolve("v.mp4", "s3://bucket/a/b") == "s3://bucket/a/b/v.mp4"
    assert inputs.resolve("../v.mp4", "s3://bucket/a/b") == "s3://bucket/a/v.mp4"


def test_manifest_without_required_columns(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [("a.mp4",)], header=("path",))
    with pytest.raises(ValueError, match="lacks column"):
        inputs.from_manifest(path)
    secret = write_manifest(tmp_path / "s.csv", [("x",)], header=("AWS_SECRET_ACCESS_KEY=Zq9marker",))
    with pytest.raises(ValueError, match=r"lacks column\(s\) uri, video_id \(its header row has 1 column") as info:
        inputs.from_manifest(secret)
    assert "marker" not in str(info.value)  # the header is the file's content: never quoted


def test_references_outside_the_input_folder_are_rejected_unread(tmp_path):
    """Manifest rows, label files and labels.csv images may only point inside the input's own folder or an
    allowed root: `..`, absolute paths, file:// and symlinks are resolved before the check."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_text("password=hunter2\n")
    (tmp_path / "in" / "link.txt").symlink_to(tmp_path / "elsewhere" / "secret.txt")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"x")
    outside = str(tmp_path / "elsewhere" / "secret.txt")
    manifest = write_manifest(tmp_path / "in" / "m.csv", [
        ("ok", "clip.mp4", "sub/../clip.txt"),
        ("dotdot", "clip.mp4", "../elsewhere/secret.txt"),
        ("absolute", "clip.mp4", outside),
        ("file_uri", "clip.mp4", "file://" + outside),
        ("symlink", "clip.mp4", "link.txt"),
        ("video_out", "../elsewhere/secret.txt", ""),
        ("s3_out", "clip.mp4", "s3://other/secret.txt"),
    ])
    result = inputs.from_manifest(manifest)
    assert set(by_id(result)) == {"ok"}
    errors = {r[schema.VIDEO_ID]: r[schema.ERROR] for r in result.rejected}
    assert set(errors) == {"dotdot", "absolute", "file_uri", "symlink", "video_out", "s3_out"}
    for video_id, error in errors.items():
        what = "video file" if video_id == "video_out" else "label file"
        assert f"{what} is outside the allowed input roots" in error, (video_id, error)
        assert "hunter2" not in error
    allowed = inputs.from_manifest(manifest, allowed_roots=["file://" + str(tmp_path / "elsewhere"),
                                                            "s3://other/"])
    assert set(by_id(allowed)) == set(errors) | {"ok"}  # the user allowed those roots explicitly


def test_directory_and_image_set_confinement(tmp_path):
    (tmp_path / "in" / "set").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "a.mp4").write_bytes(b"x")
    (tmp_path / "private" / "a.txt").write_text("password=hunter2\n")
    (tmp_path / "in" / "v.mp4").write_bytes(b"x")
    (tmp_path / "in" / "v.txt").symlink_to(tmp_path / "private" / "a.txt")
    (tmp_path / "in" / "w.mp4").symlink_to(tmp_path / "private" / "a.mp4")
    write_manifest(tmp_path / "in" / "set" / "labels.csv", [("../../private/face.png", "happy"),
                                                             (str(tmp_path / "private" / "face.png"), "sad")],
                   header=("path", "label"))
    result = inputs.discover(str(tmp_path / "in"))
    assert result.items == []
    errors = sorted((r[schema.VIDEO_ID], r[schema.ERROR].split(": ")[-1]) for r in result.rejected)
    outside = "is outside the allowed input roots (the input's own folder and --allow-root)"
    assert errors == [("set/face", f"image {outside}"), ("set/face", f"image {outside}"),
                      ("v", f"label file {outside}"), ("w", f"video file {outside}")]
    allowed = inputs.discover(str(tmp_path / "in"), allowed_roots=[str(tmp_path / "private")])
    assert sorted(i[schema.VIDEO_ID] for i in allowed.items) == ["set/batch-00000", "v", "w"]


def test_canonical_and_within():
    assert inputs.canonical("s3://b/in/../x/./y") == "s3://b/x/y"
    assert inputs.canonical("s3://b/../../etc") == "s3://b/etc"  # `..` cannot leave the bucket
    assert inputs.within("s3://b/in/a/../c.mp4", ["s3://b/in/"])
    assert not inputs.within("s3://b/in/../out/c.mp4", ["s3://b/in"])
    assert not inputs.within("s3://b/input2/c.mp4", ["s3://b/in"])  # a prefix is a folder, not a string
    assert not inputs.within("s3://c/in/c.mp4", ["s3://b/in"])
    assert inputs.within("file:///data/in/x.mp4", ["/data/in"]) and not inputs.within("/data/inx", ["/data/in"])


def test_directory_of_videos_with_label_files():
    root = need_shared("videos")
    result = inputs.discover(str(root))
    items = by_id(result)
    assert len(items) == 13 and not result.rejected
    tw = items["labeled/tw_TW01"]
    assert tw[schema.URI] == str(root / "labeled" / "tw_TW01.mp4")
    assert tw[schema.LABEL_URI] == str(root / "labeled" / "tw_TW01.txt")
    face_noface = items["unlabeled/pyfeat_face_noface"]
    assert face_noface[schema.URI].endswith(".mov") and face_noface[schema.LABEL_URI] is None
    assert inputs.discover(str(root / "labeled")).items[0][schema.VIDEO_ID] == "tw_TW01"


def test_labels_csv_image_sets_batches_and_limit():
    taiwanese = need_shared("images", "taiwanese_dev", "labels.csv")
    result = inputs.discover(str(taiwanese), limit=10, image_batch_size=4)
    assert [i[schema.VIDEO_ID] for i in result.items] == [f"taiwanese_dev/batch-0000{k}" for k in range(3)]
    members = [m for item in result.items for m in item[inputs.MEMBERS]]
    assert [len(i[inputs.MEMBERS]) for i in result.items] == [4, 4, 2]
    assert all(i[schema.KIND] == "image" and i[schema.URI] == str(taiwanese) for i in result.items)
    table = pd.read_csv(taiwanese).set_index("path")
    for m in members:
        path = m[schema.VIDEO_ID].removeprefix("taiwanese_dev/") + ".jpg"
        assert m[schema.URI] == str(taiwanese.parent / path)
        assert m[schema.LABEL] == labels.class_index(table.loc[path, "label"])
        assert m[schema.SUBJECT] == table.loc[path, "subject"]
    again = inputs.discover(str(taiwanese), limit=10, image_batch_size=4)
    assert again.items == result.items  # the sample is seeded
    other = inputs.discover(str(taiwanese), limit=10, image_batch_size=4, seed=1)
    assert other.items != result.items


def test_small_pre_cropped_sets_are_face_crops():
    root = need_shared("images")
    result = inputs.discover(str(root), limit=3)
    kinds = {i[schema.VIDEO_ID].split("/")[0]: i[schema.KIND] for i in result.items}
    assert kinds == {"ckplus48": "face_crop", "fer2013": "face_crop", "taiwanese_dev": "image"}
    assert result.num_units == 9
    fer = next(i for i in result.items if i[schema.VIDEO_ID].startswith("fer2013"))
    assert all(m[schema.SUBJECT] is None and 0 <= m[schema.LABEL] < 8 for m in fer[inputs.MEMBERS])


def test_unknown_label_names_are_rejected_per_image(tmp_path):
    image = need_shared("images", "ckplus48")
    first = pd.read_csv(image / "labels.csv").iloc[0]
    (tmp_path / "set").mkdir()
    write_manifest(tmp_path / "set" / "labels.csv", [(str(image / first["path"]), "Anger", "S1"),
                                                      (str(image / first["path"]), "bored", "S1")],
                   header=("path", "label", "subject"))
    result = inputs.discover(str(tmp_path / "set" / "labels.csv"), allowed_roots=[str(image)])
    assert len(result.items) == 1 and len(result.items[0][inputs.MEMBERS]) == 1
    assert "unknown expression label 'bored'" in result.rejected[0][schema.ERROR]


def test_s3_prefix(s3_bucket, tmp_path):
    clip = need_shared("videos", "unlabeled", "pyfeat_no_face.mp4")
    storage.write_bytes(f"{s3_bucket}/in/a/clip.mp4", clip.read_bytes())
    storage.write_text(f"{s3_bucket}/in/a/clip.txt", labels.EXPR_HEADER + "\n")
    storage.write_bytes(f"{s3_bucket}/in/b.webm", b"x")
    storage.write_text(f"{s3_bucket}/in/notes.md", "ignored")
    items = by_id(inputs.discover(f"{s3_bucket}/in"))
    assert set(items) == {"a/clip", "b"}
    assert items["a/clip"][schema.URI] == f"{s3_bucket}/in/a/clip.mp4"
    assert items["a/clip"][schema.LABEL_URI] == f"{s3_bucket}/in/a/clip.txt"
    assert items["b"][schema.LABEL_URI] is None
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, [("clip", "a/clip.mp4", "a/clip.txt")])
    storage.write_bytes(f"{s3_bucket}/in/m.csv", manifest.read_bytes())
    item = inputs.discover(f"{s3_bucket}/in/m.csv").items[0]
    assert item[schema.URI] == f"{s3_bucket}/in/a/clip.mp4"


def test_same_stem_in_one_folder_is_rejected(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"1")
    (tmp_path / "a.avi").write_bytes(b"2")
    (tmp_path / "b.mkv").write_bytes(b"3")
    result = inputs.discover(str(tmp_path))
    assert [i[schema.VIDEO_ID] for i in result.items] == ["b"]
    assert "duplicate video_id 'a'" in result.rejected[0][schema.ERROR]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a manifest"):
        inputs.discover(str(tmp_path / "nothing"))


def test_image_ids_never_carry_absolute_folders(tmp_path):
    image = need_shared("images", "ckplus48")
    paths = pd.read_csv(image / "labels.csv")["path"].iloc[[0, -1]].tolist()
    (tmp_path / "set").mkdir()
    write_manifest(tmp_path / "set" / "labels.csv", [(str(image / p), "Anger", "S1") for p in paths],
                   header=("path", "label", "subject"))
    members = inputs.discover(str(tmp_path / "set" / "labels.csv"), allowed_roots=[image]).items[0][inputs.MEMBERS]
    assert [m[schema.VIDEO_ID] for m in members] == ["set/" + p.removeprefix("images/").rsplit(".", 1)[0]
                                                     for p in paths]
    assert [m[schema.URI] for m in members] == [str(image / p) for p in paths]


def test_invalid_yaml_config_is_located_not_quoted(tmp_path):
    from fer_ray import config
    from fer_ray.jobs.preprocess import PreprocessConfig

    path = tmp_path / "bad.yaml"
    path.write_text("output: out\npassword: Zq9marker8xYw: nested\n")
    with pytest.raises(config.ConfigError, match="not valid YAML at line 2, column 24") as info:
        config.load(PreprocessConfig, str(path))
    assert "marker" not in str(info.value) and "password" not in str(info.value)


def test_jobs_pass_allow_root_to_discover(tmp_path):
    """--allow-root is a repeatable flag of both jobs that read inputs, and annotate's work_items honours it."""
    from fer_ray.jobs.annotate import AnnotateConfig, work_items
    from tests.helpers import load_job

    (tmp_path / "in").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "v.mp4").write_bytes(b"x")
    manifest = write_manifest(tmp_path / "in" / "m.csv", [("v", str(tmp_path / "data" / "v.mp4"), "")])
    output = str(tmp_path / "out")
    items = work_items(AnnotateConfig(input=manifest, models="m", output=output))
    assert items == []
    assert "video file is outside the allowed input roots" in shards.read_failures(output).to_pylist()[0]["error"]
    items = work_items(AnnotateConfig(input=manifest, models="m", output=output,
                                      allowed_roots=[str(tmp_path / "data")]))
    assert [i[schema.VIDEO_ID] for i in items] == ["v"]
    for job in ("preprocess", "annotate"):
        args = load_job(job).parse_args(["--input", manifest, "--allow-root", "a", "--allow-root", "s3://b/x"])
        assert args.allowed_roots == ["a", "s3://b/x"], job


def _split_set(tmp_path, splits: list[str]) -> str:
    """A labels.csv of tiny grey crops, one per entry of `splits` (its split column)."""
    from PIL import Image

    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(len(splits)):
        Image.new("L", (48, 48), color=10 * i).save(folder / f"{i}.png")
    rows = [(f"{i}.png", "Happiness", "", split) for i, split in enumerate(splits)]
    write_manifest(folder / "labels.csv", rows, header=("path", "label", "subject", "split"))
    return str(folder / "labels.csv")


def test_split_keeps_only_that_splits_rows_before_the_limit(tmp_path, caplog):
    """fer2013's labels.csv holds train and test rows: a training set takes split=train, and its limit samples
    among those rows only, so no test face reaches training however large the limit."""
    labels_csv = _split_set(tmp_path, ["train", "test", "train", "test", "train"])

    def ids(**kwargs) -> set[str]:
        found = inputs.discover(labels_csv, **kwargs)
        return {m[schema.VIDEO_ID] for item in found.items for m in item[inputs.MEMBERS]}

    assert ids(split="train") == {"set/0", "set/2", "set/4"}
    assert ids(split="test", limit=5) == {"set/1", "set/3"}
    assert len(ids(split="train", limit=2)) == 2 and ids(split="train", limit=2) <= {"set/0", "set/2", "set/4"}
    assert ids(split="train") == ids(split="train", seed=3)  # whatever the order, the same rows
    with caplog.at_level("WARNING", logger="fer_ray.inputs"):
        assert len(ids()) == 5  # no split asked: every row, and a warning that says how to take one
    assert "2 splits" in caplog.text and "--split" in caplog.text


def test_a_split_the_set_lacks_is_an_error_that_does_not_quote_the_file(tmp_path):
    labels_csv = _split_set(tmp_path, ["secret-split-name", "train"])
    with pytest.raises(ValueError, match="no row of split 'test' among its 2 rows") as error:
        inputs.discover(labels_csv, split="test")
    assert "secret-split-name" not in str(error.value)
    (tmp_path / "plain").mkdir()
    write_manifest(tmp_path / "plain" / "labels.csv", [("a.png", "Anger")], header=("path", "label"))
    with pytest.raises(ValueError, match="has no split column"):
        inputs.discover(str(tmp_path / "plain" / "labels.csv"), split="train")


def test_fer2013_train_split_holds_no_test_face():
    fer = need_shared("images", "fer2013", "labels.csv")
    found = inputs.discover(str(fer), split="train", limit=40000)
    members = [m for item in found.items for m in item[inputs.MEMBERS]]
    assert len(members) == 28709 and all(m[schema.VIDEO_ID].startswith("fer2013/train/") for m in members)
