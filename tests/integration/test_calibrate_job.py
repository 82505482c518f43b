"""jobs/calibrate.py on the session's reference faces (tests/golden.py: three labelled dev videos and an
unlabelled one, every 5th of the first 120 frames): it annotates them with logits kept, chooses the window
and prior correction on their labels, and records the choice in models.json, which annotate then uses."""

from __future__ import annotations

from fer_ray import storage
from fer_ray.evaluate import calibrate as calibration
from fer_ray.jobs import annotate
from tests.helpers import load_job


def test_calibration_is_recorded_and_annotate_uses_it(dev_reference, ray_local):
    models = f"{dev_reference}/calibrated-models"  # a copy: the reference's own models stay uncalibrated
    for uri in storage.list_files(f"{dev_reference}/models"):
        storage.write_bytes(models + uri[len(f"{dev_reference}/models"):], storage.read_bytes(uri))
    output = f"{dev_reference}/calibration"
    argv = ["--input", f"{dev_reference}/ref/pre", "--labels", f"{dev_reference}/videos/", "--models", models,
            "--output", output, "--windows", "0", "4", "16"]
    assert load_job("calibrate").main(argv) == 0

    chosen = storage.read_json(f"{output}/calibration.json")
    recorded = storage.read_json(f"{models}/models.json")["calibration"]["cfc_sp"]
    assert recorded == chosen and chosen["window"] in (0, 4, 16)
    valid = chosen["validation"]
    assert valid["videos"] == ["tw_TW01", "tw_TW07", "tw_TW11"]  # the labelled ones; the unlabelled is not scored
    grid = {(g["prior_correction"], g["window"]): g["f1"] for g in valid["grid"]}
    assert {w for _, w in grid} == {0, 4, 16} and valid["f1"] == max(grid.values())
    assert grid[(chosen["prior_correction"], chosen["window"])] == valid["f1"]
    assert set(calibration.WINDOWS) >= {0, 16}
    # annotate takes the recorded choice unless its flags say otherwise
    config = annotate.calibrated(annotate.load_config({"input": "x", "models": models, "output": "y"}))
    assert (config.window, config.prior_correction) == (chosen["window"], chosen["prior_correction"])
    assert storage.exists(f"{output}/annotate/logits")  # the validation run kept every model's logits
