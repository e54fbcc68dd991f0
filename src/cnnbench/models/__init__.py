"""Model registry: ``register``, ``create_model``, ``list_models``.

One module per architecture, named as it is registered (``seed001_mnist.py`` registers
``seed001_mnist``), so that train@<model> in dvc.yaml depends on its own architecture's
file and the shared ``layers.py`` and ``keras.py``, not on every other model's: adding or
editing one architecture leaves the others' stages up to date. An architecture module
imports only from those two and this package (tests/test_models.py checks both rules).

The seeds' seven architectures (``cifar_base``, ``seed*``) are rebuilt exactly from
../shared/seeds/: same layers, shapes and parameter counts as their Keras summaries.
Keras counts BatchNorm moving mean/variance in "Total params"; in PyTorch they are
buffers, so each docstring gives both: trainable and Keras total. Unstated details are
chosen as the seed implies and noted where they are chosen. The others are cnnbench's
own, each beating the seeds on the seeds' budget or a tighter one, which its params.yaml
entry states so that the leaderboard gives PASS or FAIL from the numbers.

Architectures register themselves on import; importing this package imports them all, so
a module that fails to import fails every stage, whichever model it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import nn

from cnnbench.models.keras import apply_keras_defaults

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DATASET: dict[str, str] = {}


def register(name: str, dataset: str) -> Callable:
    """Register an architecture factory under ``name``; ``dataset`` is the data set
    whose input shape and class count it was designed for (used in tests and summaries)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        _DATASET[name] = dataset
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_dataset(name: str) -> str:
    _check_known(name)
    return _DATASET[name]


def create_model(name: str, keras_defaults: bool = False, **overrides) -> nn.Module:
    """Build the architecture ``name``; ``overrides`` go to its factory (e.g. num_classes).
    ``keras_defaults``: Keras's layer defaults instead of PyTorch's (models/keras.py)."""
    _check_known(name)
    model = _REGISTRY[name](**overrides)
    return apply_keras_defaults(model) if keras_defaults else model


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


SHARED_MODULES = ("layers", "keras")  # every other module here is one architecture


def _import_architectures() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in SHARED_MODULES:
            importlib.import_module(f"{__name__}.{module.name}")


_import_architectures()
