import numpy as np
import pytest

from fer_ray import labels
from fer_ray.labels import LabelFormatError


def test_class_order_and_maps_are_consistent():
    assert labels.ABAW_CLASSES[labels.class_index("happy")] == "Happiness"
    for abaw, coarse in enumerate(labels.COARSE_OF_ABAW):
        if coarse == labels.COARSE_NEGATIVE:
            neg = labels.NEGATIVE_OF_ABAW[abaw]
            assert labels.ABAW_OF_NEGATIVE[neg] == abaw
        else:
            assert labels.ABAW_OF_COARSE[coarse] == abaw
            assert labels.NEGATIVE_OF_ABAW[abaw] == -1
    assert labels.class_index("contempt") == labels.ABAW_CLASSES.index("Other")


def test_task_labels_maps_and_keeps_unannotated():
    abaw = np.array([0, 1, 2, 3, 4, 5, 6, 7, -1])
    assert labels.task_labels(abaw, "coarse").tolist() == [0, 4, 4, 4, 1, 4, 2, 3, -1]
    assert labels.task_labels(abaw, "negative").tolist() == [-1, 0, 1, 2, -1, 3, -1, -1, -1]
    assert labels.task_labels(abaw, "expr").tolist() == abaw.tolist()
    with pytest.raises(ValueError, match="valid: expr, coarse, negative"):
        labels.task_labels(abaw, "valence")


def test_expr_round_trip(tmp_path):
    values = [0, 1, 2, 3, 4, 5, 6, 7, -1, 4]
    text = labels.format_expr(values)
    assert text.splitlines()[0] == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    assert labels.parse_expr(text).tolist() == values
    path = tmp_path / "v.txt"
    labels.write_expr(str(path), values)
    assert labels.read_expr(str(path)).tolist() == values


@pytest.mark.parametrize("text, message", [
    ("", "empty label file"),
    ("Neutral,Anger\n0\n", ":1: wrong header"),
    (labels.EXPR_HEADER + "\n0\n8\n", ":3: value 8 outside -1..7"),
    (labels.EXPR_HEADER + "\n0\nhappy\n", ":3: not an integer"),
    (labels.EXPR_HEADER + "\n0\n\n1\n", ":3: empty line"),
    (labels.EXPR_HEADER + "\n-2\n", ":2: value -2 outside"),
])
def test_parse_errors_name_file_and_line(text, message):
    with pytest.raises(LabelFormatError, match=message) as info:
        labels.parse_expr(text, source="clip.txt")
    assert str(info.value).startswith("clip.txt")


SECRET_LINES = ["AWS_SECRET_ACCESS_KEY=Zq9marker8xYw", "password=Zq9marker8xYw", "Zq9marker8xYw",
                "-----BEGIN RSA PRIVATE KEY-----"]


@pytest.mark.parametrize("line", SECRET_LINES)
@pytest.mark.parametrize("where", ["header", "body"])
def test_parse_errors_never_quote_the_file(line, where):
    text = f"{line}\n0\n" if where == "header" else f"{labels.EXPR_HEADER}\n0\n{line}\n"
    with pytest.raises(LabelFormatError) as info:
        labels.parse_expr(text, source="clip.txt")
    message = str(info.value)
    assert ("wrong header" if where == "header" else ":3: not an integer") in message
    assert "marker" not in message and "BEGIN" not in message and "password" not in message, message


def test_label_values_are_quoted_only_when_short_plain_words():
    with pytest.raises(LabelFormatError, match="unknown expression label 'bored'"):
        labels.class_index("bored")
    with pytest.raises(LabelFormatError, match=r"a value of 35 characters, not shown") as info:
        labels.class_index("AWS_SECRET_ACCESS_KEY=Zq9marker8xYw")
    assert "marker" not in str(info.value)


def test_read_expr_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        labels.read_expr(str(tmp_path / "missing.txt"))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LabelFormatError, match="unreadable label file: not UTF-8"):
        labels.read_expr(str(binary))


def test_unknown_label_name_lists_valid():
    with pytest.raises(LabelFormatError, match="valid: Neutral, Anger"):
        labels.class_index("bored")
    with pytest.raises(LabelFormatError):
        labels.format_expr([9])


def test_real_label_files_parse(shared_data):
    for path in sorted((shared_data / "videos" / "labeled").glob("*.txt")):
        values = labels.read_expr(str(path))
        assert len(values) > 1000
        assert values.min() >= -1 and values.max() <= 7
