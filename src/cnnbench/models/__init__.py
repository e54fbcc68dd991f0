"""Model registry: ``register``, ``create_model``, ``list_models``.

Architectures register themselves on import; importing this package imports them all.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

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


def create_model(name: str, **overrides) -> nn.Module:
    """Build the architecture ``name``; ``overrides`` go to its factory (e.g. num_classes)."""
    _check_known(name)
    return _REGISTRY[name](**overrides)


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


from cnnbench.models import ours, seeds  # noqa: E402,F401  (registers the architectures)
