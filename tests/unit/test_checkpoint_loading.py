"""Checkpoints are data, not code: every loader refuses a pickle that would run code, before it runs;
what our training saves (Ray Train resume state included) loads with weights_only=True."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_ray.models import create_model, load_checkpoint, load_pretrained
from fer_ray.safe_load import as_plain, load_data
from fer_ray.train.config import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
REFUSED = "is not a weights-only file (refusing to unpickle code)"


class Payload:
    """Unpickling this writes the marker file: proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _evil_files(tmp_path: Path) -> dict[str, Path]:
    Payload.marker = str(tmp_path / "MARKER")
    files = {"raw_pickle": pickle.dumps({"state_dict": Payload()}),
             "raw_pickle_p2": pickle.dumps({"state_dict": Payload()}, protocol=2)}
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"name": "resnet_smoke"}, "x": Payload()}, buffer)
    files["torch_save"] = buffer.getvalue()
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("loader", ["load_checkpoint", "load_pretrained", "backbone_pretrained", "resume_state"])
def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, loader):
    for name, path in _evil_files(tmp_path).items():
        with pytest.raises(ValueError) as info:
            if loader == "load_checkpoint":
                load_checkpoint(str(path))
            elif loader == "load_pretrained":
                load_pretrained(create_model("resnet_smoke", 8), str(path))
            elif loader == "backbone_pretrained":
                create_model("mao_cnn_gru_smoke", 8, backbone_pretrained=str(path))
            else:  # what train_func / _write_outputs do with a Ray Train checkpoint's state file
                load_data(str(path), str(path))
        message = str(info.value)
        assert REFUSED in message and str(path) in message, (name, message)
        assert "pwned" not in message and "Payload" not in message and "write_text" not in message
        assert not (tmp_path / "MARKER").exists(), f"{name}: unpickling ran code through {loader}"


def test_the_payload_is_real(tmp_path):
    """Guard against a test that cannot fail: the same bytes, unpickled unsafely, do create the marker."""
    path = _evil_files(tmp_path)["raw_pickle"]
    pickle.loads(path.read_bytes())
    assert (tmp_path / "MARKER").read_text() == "pwned"


def test_junk_is_not_a_checkpoint_rather_than_code(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 not a checkpoint SECRET_TOKEN=abc")
    with pytest.raises(ValueError, match=re.escape(f"{junk}: not a PyTorch checkpoint")) as info:
        load_data(str(junk), str(junk))
    assert "SECRET_TOKEN" not in str(info.value)


@pytest.mark.parametrize("optimizer,scheduler", [("adamw", "cosine"), ("sgd", "multistep")])
def test_training_state_round_trips_weights_only(tmp_path, optimizer, scheduler):
    """The resume state train_func saves (model, optimiser, scheduler, history with numpy numbers) loads with
    weights_only=True and restores the trainer exactly."""
    from fer_ray.train.loop import Trainer

    spec = ModelSpec(name="m", arch="resnet_smoke", task="coarse", optimizer=optimizer, scheduler=scheduler,
                     epochs=3)
    spec.validate()
    trainer = Trainer(spec, "cpu", [5, 5, 5, 5, 5])
    size = spec.input_size
    x, y = torch.rand(4, 3, size, size), torch.tensor([0, 1, 2, 4])
    stats = trainer.train_epoch([(x, y)])
    val, cm = trainer.evaluate([(x, y)])
    row = {"epoch": 0, **stats, **val, "np_score": np.float64(0.5), "np_steps": np.int64(3)}
    history = [{**row, "confusion": cm}]
    raw = trainer.state(0, history, dict(row))
    with pytest.raises(ValueError, match="refusing"):  # numpy objects would not load as data ...
        torch.save(raw, tmp_path / "raw.pt")
        load_data(str(tmp_path / "raw.pt"), "raw.pt")
    torch.save(as_plain(raw), tmp_path / "state.pt")  # ... which is why train_func saves as_plain(state)
    state = load_data(str(tmp_path / "state.pt"), "state.pt")
    assert state["history"][0]["np_score"] == 0.5 and state["history"][0]["confusion"] == cm.tolist()
    again = Trainer(spec, "cpu", [5, 5, 5, 5, 5])
    again.load_state(state)
    for key, value in trainer.core.state_dict().items():
        assert torch.equal(value, again.core.state_dict()[key]), key
    assert again.optimizer.state_dict()["param_groups"] == trainer.optimizer.state_dict()["param_groups"]
    assert again.scheduler.state_dict() == trainer.scheduler.state_dict()


def test_every_torch_load_is_weights_only():
    """No torch.load with weights_only=False (or without weights_only=True) anywhere in the code we ship."""
    offenders = []
    for folder in ("fer_ray", "jobs", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():  # this file names what it looks for
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if "weights_only=False" in line.replace(" ", "") or \
                        ("torch.load(" in line and "weights_only=True" not in line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
