"""benchmarks/domain.py: the training-set variants draw what they say."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

DOMAIN = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "domain.py"), run_name="domain")


def test_sample_weights_balance_classes_and_fix_the_taiwanese_share():
    y = np.array([0, 0, 0, 0, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4])
    source = np.array(["taiwanese_dev_train"] * 4 + ["fer2013"] * 12)
    plain = DOMAIN["sample_weights"](y, source, None)
    assert plain.sum() == pytest.approx(1.0)
    # 1 / sqrt(count): a class-4 face (11 of them) is drawn sqrt(4 / 11) as often as a class-0 face (4)
    assert plain[5] / plain[0] == pytest.approx(np.sqrt(4 / 11))
    half = DOMAIN["sample_weights"](y, source, 0.5)
    assert half[:4].sum() == pytest.approx(0.5) and half.sum() == pytest.approx(1.0)
    assert half[4] / half[5] == pytest.approx(np.sqrt(11 / 1))  # within a source the class balance stays


def test_grey_is_the_channel_mean_on_all_three_channels():
    x = torch.tensor([[[[0]], [[30]], [[90]]]], dtype=torch.uint8)  # (1, 3, 1, 1)
    assert DOMAIN["grey"](x).flatten().tolist() == [40, 40, 40]
