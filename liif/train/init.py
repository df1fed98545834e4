"""``train.init``: the weights a fresh run starts from (fine-tuning), checked against the configured model."""
from __future__ import annotations

from typing import Any

from liif.errors import LiifError
from liif.models import ImplicitDecoder
from liif.models.spec import ModelSpec, encoder_kwargs


def _effective(spec: ModelSpec) -> dict[str, Any]:
    """The spec with the encoder's defaults filled in: specs that build the same model compare equal."""
    return {**spec.to_dict(), "encoder_args": encoder_kwargs(spec.encoder, spec.encoder_args)}


def load_init(model: ImplicitDecoder, want: ModelSpec, init: str) -> str:
    """Load the weights named by ``init`` (a pretrained name, fetched and verified when missing, or a checkpoint
    file) into ``model``, whose spec is ``want``; returns the file loaded. A one-line error if they differ."""
    from liif import checkpoints, weights

    path = weights.path(init)
    spec, sd = checkpoints.read(path)
    got, expected = _effective(spec), _effective(want)
    diff = [k for k in {**got, **expected} if got.get(k) != expected.get(k)]
    if diff:
        k = diff[0]
        raise LiifError(f"config key train.init: {init} holds a different model than the model section describes "
                        f"({', '.join(diff)}; {k}: {got.get(k)!r} in the weights, {expected.get(k)!r} in the config)")
    model.load_state_dict(sd, strict=True)
    return str(path)
