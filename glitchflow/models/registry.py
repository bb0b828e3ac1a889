"""Architectures by name, so configs and Tune search spaces hold only names and numbers."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from glitchflow.models.unet import DilatedResNet, UNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator adding an architecture factory under ``name``; a second architecture
    under a name already taken is refused (it would silently replace the first)."""

    def wrap(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered ({_REGISTRY[name]})")
        _REGISTRY[name] = fn
        return fn

    return wrap


@register("unet_res_att")
def _unet_res_att(
    n_aux: int, base: int = 64, depth: int = 3, residual: bool = True, attention: bool = True
) -> nn.Module:
    """The seed's architecture: residual blocks and attention-gated skips."""
    return UNet(n_aux, base=base, depth=depth, residual=residual, attention=attention)


@register("unet")
def _unet(
    n_aux: int, base: int = 64, depth: int = 3, residual: bool = False, attention: bool = False
) -> nn.Module:
    """Plain U-Net baseline."""
    return UNet(n_aux, base=base, depth=depth, residual=residual, attention=attention)


@register("dilated_resnet")
def _dilated(
    n_aux: int, base: int = 32, depth: int = 6, residual: bool = True, attention: bool = False
) -> nn.Module:
    """Full-resolution dilated residual network (``base`` = width, ``depth`` = blocks)."""
    del residual, attention  # always residual, no skips to gate
    return DilatedResNet(n_aux, width=base, depth=depth)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build an architecture by name; unknown names list the known ones."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    return factory(**kwargs)
