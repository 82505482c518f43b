"""A bad flag or config value ends a job with one line naming the problem (SystemExit), before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_job

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")

CASES = [
    ("preprocess", ["--input", "in", "--output", "out", "--stride", "0"], "stride must be >= 1"),
    ("preprocess", ["--input", "in", "--output", "out", "--device", "cuda"], "worker_gpus is 0"),
    ("preprocess", ["--input", "in", "--output", "out", "--split", " "], "split must be a split's name"),
    ("annotate", ["--input", "in", "--models", "m", "--output", "out", "--system", "nope"],
     "system 'nope' unknown; valid: cfc_sp, baseline, mao, prl"),
    ("annotate", ["--input", "in", "--models", "m", "--output", "out", "--decode-workers", "-1"],
     "decode_workers must be >= 0"),
    ("evaluate", ["--predictions", "p", "--labels", "l", "--output", "out", "--window", "-3"],
     "windows must be >= 0"),
    ("train_all", ["--config", SMOKE, "--faces", "f", "--output", "out",
                   "--max-concurrent-trials", "0"], "max_concurrent_trials must be >= 1"),
    ("demo", ["--data", "nowhere", "--output", "out"], "no shared data at nowhere"),
]


@pytest.mark.parametrize(("job", "argv", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_config_is_one_clear_line(job, argv, message, tmp_path):
    argv = [str(tmp_path / a) if a == "out" else a for a in argv]
    with pytest.raises(SystemExit) as caught:
        load_job(job).main(argv)
    text = str(caught.value.code)
    assert text.startswith(f"{job}: invalid configuration: ") and message in text, text


@pytest.mark.shared_data
def test_demo_never_calibrates_on_the_videos_it_scores(tmp_path):
    from tests.conftest import need_shared

    data = str(need_shared("videos", "labeled").parents[1])
    with pytest.raises(SystemExit) as caught:
        load_job("demo").main(["--data", data, "--output", str(tmp_path / "out"), "--videos", "tw_TW01",
                               "--validation-videos", "tw_TW01", "tw_TW11"])
    assert "['tw_TW01'] are both scored and validation videos" in str(caught.value.code)


def test_preprocess_run_many_refuses_inputs_it_cannot_put_in_one_output(tmp_path):
    """Several inputs share one output and one set of face settings (the demo's image sets): anything else is
    refused before an input is read."""
    from fer_ray.jobs.preprocess import PreprocessConfig, run_many

    def config(**kw) -> PreprocessConfig:
        return PreprocessConfig(**{"input": str(tmp_path / "missing"), "output": str(tmp_path / "out"), **kw})

    with pytest.raises(ValueError, match="no inputs"):
        run_many([])
    with pytest.raises(ValueError, match="one output with the same face settings"):
        run_many([config(), config(output=str(tmp_path / "other"))])
    with pytest.raises(ValueError, match="one output with the same face settings"):
        run_many([config(), config(face_size=64)])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--split", "train"], []], ids=["split-it-lacks", "missing-column"])
def test_an_input_list_preprocess_cannot_use_is_one_line_before_ray(argv, tmp_path, monkeypatch):
    """A labels.csv asked for a split it has no column for, or one without a label column: one line naming
    the file, and Ray never starts (the job reads its inputs first)."""
    job, started = load_job("preprocess"), []
    monkeypatch.setattr(job, "init_ray", lambda **kwargs: started.append(kwargs))
    (tmp_path / "set").mkdir()
    header = "path,label\n" if argv else "path\n"
    (tmp_path / "set" / "labels.csv").write_text(header + "a.png" + (",Anger" if argv else "") + "\n")
    with pytest.raises(SystemExit) as caught:
        job.main(["--input", str(tmp_path / "set" / "labels.csv"), "--output", str(tmp_path / "out"), *argv])
    text = str(caught.value.code)
    expected = "has no split column" if argv else "labels.csv lacks column(s) label"
    assert text.startswith(f"preprocess: {tmp_path / 'set' / 'labels.csv'}: ") and expected in text, text
    assert started == []
