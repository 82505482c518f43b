"""Behaviour unchanged: the preprocess, annotate and evaluate jobs on the fixed dev input write what the code
before the redesign wrote (tests/golden/dev_outputs.json, written by `python -m tests.golden write` at
commit 1c0fef8): the same frames, labels, reasons and submissions, boxes, landmarks, face pixels and
probabilities within float tolerance, the same metrics."""

from __future__ import annotations

import json

import pytest

from tests import golden

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_outputs_equal_the_golden_file(dev_reference):
    want = json.loads(golden.GOLDEN.read_text())
    got = json.loads(json.dumps(golden.digest(dev_reference)))  # the file's own types (tuples -> lists)
    diffs = golden.differences(got, want)
    assert not diffs, (f"{len(diffs)} values differ from {golden.GOLDEN.name} (first 20 below); if the change "
                       "is deliberate, rewrite it with `python -m tests.golden write` and say why in the commit:\n"
                       + "\n".join(diffs[:20]))


def test_a_changed_value_is_found():
    want = json.loads(golden.GOLDEN.read_text())
    got = json.loads(json.dumps(want))
    video = sorted(got["videos"])[0]
    got["videos"][video]["predictions"]["probs"][0][0] += 1e-3
    got["videos"][video]["faces"]["bbox"][0] = None if got["videos"][video]["faces"]["bbox"][0] else [0.0] * 4
    diffs = golden.differences(got, want)
    assert len(diffs) == 2 and "probs" in diffs[0] + diffs[1] and "bbox" in diffs[0] + diffs[1], diffs
    assert golden.differences(want, want) == []
