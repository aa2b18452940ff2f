"""Reading MindSpeed-MM's `model_optim_rng.pt` safely: torch.load with weights_only=True, MindSpeed-MM's own
classes (its `args`, say) kept as inert data, and any pickle that would call a function refused."""
from __future__ import annotations

import argparse
import logging
import re

import torch

from wan_core.errors import UserError, plain_text
from wan_core.storage import Location

log = logging.getLogger("wan22.weights")

# Non-tensor types a MindSpeed-MM model_optim_rng.pt may hold; torch.load(weights_only=True) admits
# these and nothing else (never a full unpickle).
MM_PT_SAFE_GLOBALS = [argparse.Namespace]


def _numpy_safe_globals():
    try:
        import numpy as np

        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # pragma: no cover
        return []
    dtypes = [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint32", "uint8", "bool")]
    return [_reconstruct, np.ndarray, np.dtype, *dtypes]


class _InertMeta(type):
    """Metaclass of the placeholders for classes a checkpoint names but this project does not have: creating an
    instance the way pickle rebuilds plain objects (cls.__new__ + state) works; calling it is refused."""

    def __call__(cls, *args, **kwargs):
        raise _ForeignCall(f"{cls.__module__}.{cls.__qualname__}")


class _ForeignCall(Exception):
    pass


class _Inert(metaclass=_InertMeta):
    """An object of a foreign class, kept as data: its pickled state, nothing else, and no behaviour."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)


def _placeholder(path: str) -> type:
    module, _, name = path.rpartition(".")
    return _InertMeta(name, (_Inert,), {"__module__": module, "__qualname__": name})


def load_model_tensors(pt: Location) -> dict[str, torch.Tensor]:
    """The model tensors of a MindSpeed-MM model_optim_rng.pt, read with weights_only=True. Classes the file names
    but this project lacks (MindSpeed-MM's `args`, say) become inert placeholders, registered one by one as
    torch's unpickler reports them; a pickle that would call any function outside torch's allowlist is refused."""
    local = pt.local_path()
    placeholders: list[type] = []
    while True:
        try:
            with torch.serialization.safe_globals(MM_PT_SAFE_GLOBALS + _numpy_safe_globals() + placeholders):
                if local is not None:
                    blob = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
                else:
                    with pt.open("rb") as f:
                        blob = torch.load(f, map_location="cpu", weights_only=True)
            break
        except _ForeignCall as call:
            raise UserError(f"{pt}: refused: loading it would call {call.args[0]} (a pickle that runs code); nothing "
                            "from it was executed") from None
        except Exception as exc:  # UnpicklingError names a disallowed global; anything else is a corrupt file
            text = plain_text(exc)
            blocked = re.search(r"unsupported GLOBAL ([\w.]+) whose module", text)
            if blocked:
                raise UserError(f"{pt}: refused: loading it would call {blocked.group(1)} (a pickle that runs code); "
                                "nothing from it was executed") from None
            unknown = re.search(r"GLOBAL ([\w.]+) was not an allowed global", text)
            if unknown and len(placeholders) < 64:
                placeholders.append(_placeholder(unknown.group(1)))
                continue
            reason = next((line.strip() for line in text.splitlines()[1:] if line.strip()), "") or \
                (text.strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{pt}: cannot be read as a MindSpeed-MM checkpoint with weights_only=True "
                            f"({reason})") from None
    state = blob.get("model") if isinstance(blob, dict) else None
    if state is None and isinstance(blob, dict) and "model0" in blob:
        raise UserError(f"{pt}: virtual-pipeline checkpoints (model0, model1, ...) are not supported; "
                        "convert with pp=1")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{pt}: no 'model' state dict of tensors inside")
    skipped = sorted(k for k in blob if k != "model")
    if skipped or placeholders:
        foreign = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in placeholders)
        log.warning("%s: read the model tensors only; skipped %s%s", pt, ", ".join(map(str, skipped)) or "nothing else",
                    f" (classes kept as inert data, never run: {foreign})" if foreign else "")
    return {k: v for k, v in state.items() if "_extra_state" not in k}
