"""jobs/calibrate.py on the session's reference faces (tests/golden.py: three labelled dev videos and an
unlabelled one, every 5th of the first 120 frames): it annotates them with logits kept, with and without the
flip test and per-video normalisation, chooses the window, prior correction, video prior, flip test and
normalisation on their labels, and records the choice in models.json, which annotate then uses."""

from __future__ import annotations

import numpy as np

from fer_ray import schema, storage
from fer_ray.evaluate import calibrate as calibration
from fer_ray.infer.readers import read_logits
from fer_ray.jobs import annotate
from tests.helpers import load_job


def test_calibration_is_recorded_and_annotate_uses_it(dev_reference, ray_local):
    models = f"{dev_reference}/calibrated-models"  # a copy: the reference's own models stay uncalibrated
    for uri in storage.list_files(f"{dev_reference}/models"):
        storage.write_bytes(models + uri[len(f"{dev_reference}/models"):], storage.read_bytes(uri))
    output = f"{dev_reference}/calibration"
    argv = ["--input", f"{dev_reference}/ref/pre", "--labels", f"{dev_reference}/videos/", "--models", models,
            "--output", output, "--windows", "0", "4", "16", "--flip-test", "--adapt-bn"]  # strengths 0 and 0.5
    assert load_job("calibrate").main(argv) == 0

    chosen = storage.read_json(f"{output}/calibration.json")
    recorded = storage.read_json(f"{models}/models.json")["calibration"]["cfc_sp"]
    assert recorded == chosen and chosen["window"] in (0, 4, 16)
    valid = chosen["validation"]
    assert valid["videos"] == ["tw_TW01", "tw_TW07", "tw_TW11"]  # the labelled ones; the unlabelled is not scored
    def key(g):  # one grid point: corrections, the ensemble members' weights, window
        return g["prior_correction"], g["video_prior"], tuple(sorted(g["weights"].items())), g["window"]

    grid = {key(g): g["f1"] for g in valid["grid"]}
    assert len(grid) == len(valid["grid"]) and valid["f1"] == max(grid.values())
    assert {k[-1] for k in grid} == {0, 4, 16} and {k[1] for k in grid} == set(calibration.VIDEO_PRIORS)
    assert grid[key(chosen)] == valid["f1"]
    # the flip test run scored the same faces: the better of the two is kept, the plain one on a tie
    assert valid["flip_test_f1"][{True: "on", False: "off"}[chosen["flip_test"]]] == valid["f1"]
    assert chosen["flip_test"] == (valid["flip_test_f1"]["on"] > valid["flip_test_f1"]["off"])
    assert valid["adapt_bn_f1"][f"{chosen['adapt_bn']:g}"] == valid["f1"]
    assert chosen["adapt_bn"] == (0.5 if valid["adapt_bn_f1"]["0.5"] > valid["adapt_bn_f1"]["0"] else 0.0)
    # four runs of the same faces, each its own model version; the chosen one's is recorded
    runs = {(flip, adapt): storage.read_json(f"{output}/{name}/summary.json")["model_version"]
            for flip, adapt, name in ((False, 0.0, "annotate"), (True, 0.0, "annotate_flip"),
                                      (False, 0.5, "annotate_adapt0.5"), (True, 0.5, "annotate_flip_adapt0.5"))}
    assert len(set(runs.values())) == 4 and chosen["model_version"] == runs[chosen["flip_test"], chosen["adapt_bn"]]
    # the normalised run scored every face the plain run did, once, and with other scores (its own statistics)
    key = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.MODEL]
    plain, adapted = (read_logits(f"{output}/{name}").to_pandas().set_index(key).sort_index()
                      for name in ("annotate", "annotate_adapt0.5"))
    assert adapted.index.equals(plain.index) and adapted.index.is_unique
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(adapted[schema.SCORES], plain[schema.SCORES])]
    assert np.median(moved) > 1e-3
    assert set(calibration.WINDOWS) >= {0, 16}
    # annotate takes the recorded choice unless its flags say otherwise
    config = annotate.calibrated(annotate.load_config({"input": "x", "models": models, "output": "y"}))
    assert (config.window, config.prior_correction, config.video_prior, config.flip_test, config.adapt_bn) == (
        chosen["window"], chosen["prior_correction"], chosen["video_prior"], chosen["flip_test"], chosen["adapt_bn"])
    flag = annotate.calibrated(annotate.load_config({"input": "x", "models": models, "output": "y",
                                                     "flip_test": not chosen["flip_test"]}))
    assert flag.flip_test is not chosen["flip_test"] and flag.window == chosen["window"]
    assert storage.exists(f"{output}/annotate/logits")  # the validation run kept every model's logits
