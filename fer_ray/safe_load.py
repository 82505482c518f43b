"""Checkpoints are data, not code: the one way fer-ray unpickles a PyTorch file.

Every torch.load goes through :func:`load_data` with ``weights_only=True``: tensors, dicts, lists, tuples,
numbers and strings load; a pickle that names any other callable (a ``__reduce__`` that runs a command,
an arbitrary class) is refused before anything in it runs, with one line naming the file, never quoting
it. What we save ourselves goes through :func:`as_plain` first, so it always loads that way.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any

import numpy as np

_CODE_HINTS = ("unsupported global", "unsupported class")
_PICKLE_OR_ZIP = (b"\x80", b"PK\x03\x04")  # a pickle protocol header, a torch.save zip archive


def load_data(source: bytes | str, name: str, map_location: Any = "cpu", kind: str = "PyTorch checkpoint"):
    """torch.load(weights_only=True) of bytes or a local path; `name` (a URI) is what errors mention.

    A real pickle or torch archive that the weights-only loader rejects is refused as code; anything else
    that fails is "not a <kind>". Neither message quotes the file or the loader's account of it.
    """
    import torch

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as handle:
            data = handle.read()
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if any(h in str(exc).lower() for h in _CODE_HINTS) or data.startswith(_PICKLE_OR_ZIP):
            raise ValueError(f"checkpoint {name} is not a weights-only file (refusing to unpickle code)") from None
        raise ValueError(f"{name}: not a {kind} (UnpicklingError)") from None
    except Exception as exc:  # EOF, bad magic number, broken zip and other corruptions
        raise ValueError(f"{name}: not a {kind} ({type(exc).__name__})") from None


def as_plain(value):
    """The same structure with numpy scalars/arrays turned into Python numbers/lists, so weights_only loads it.

    Tensors, strings, numbers and None stay; dict subclasses the loader allows (OrderedDict, Counter: the
    optimiser and scheduler states hold them) keep their type; tuples stay tuples.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        items = {k: as_plain(v) for k, v in value.items()}
        if isinstance(value, (collections.OrderedDict, collections.Counter)):
            return type(value)(items)
        return items
    if isinstance(value, (list, tuple)):
        out = [as_plain(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    return value
