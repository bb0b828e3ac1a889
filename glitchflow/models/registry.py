"""Architectures by name, each with its own typed arguments (a dataclass per architecture,
as nanoGPT's ``GPTConfig``), so configs and Tune search spaces hold only names and numbers.

A checkpoint stores ``{"name", "kwargs"}`` where ``kwargs`` are exactly the fields of
that architecture's dataclass; :func:`create_model` refuses an argument the
architecture does not take, naming the ones it does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from glitchflow.models.unet import DilatedResNet, UNet


@dataclass(frozen=True)
class UNetConfig:
    """U-Net arguments (:class:`~glitchflow.models.unet.UNet`).

    n_aux: input channels; base: channels of the first level (level k: base * 2**k);
    depth: down-sampling levels; residual: residual conv blocks; attention: attention
    gates on the skips."""

    n_aux: int
    base: int = 64
    depth: int = 3
    residual: bool = True
    attention: bool = True

    @classmethod
    def from_settings(cls, n_aux: int, base: int, depth: int, residual, attention, defaults):
        """From the config's ``train.model`` (None keeps the architecture's default)."""
        given = {"residual": residual, "attention": attention}
        chosen = defaults | {k: v for k, v in given.items() if v is not None}
        return cls(n_aux=n_aux, base=base, depth=depth, **chosen)


@dataclass(frozen=True)
class DilatedResNetConfig:
    """Dilated residual network arguments (:class:`~glitchflow.models.unet.DilatedResNet`).

    n_aux: input channels; width: channels per block; depth: number of blocks."""

    n_aux: int
    width: int = 32
    depth: int = 6

    @classmethod
    def from_settings(cls, n_aux: int, base: int, depth: int, residual, attention, defaults):
        """From the config's ``train.model``: ``base`` is the width; the blocks are always
        residual and there are no skips to gate, so ``residual``/``attention`` do not apply."""
        return cls(n_aux=n_aux, width=base, depth=depth)


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its argument dataclass, module class and defaults."""

    name: str
    config: type
    module: type[nn.Module]
    defaults: dict[str, Any]
    description: str

    def arguments(self) -> list[str]:
        return [f.name for f in fields(self.config)]


_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture; a second one under a name already taken is refused (it would
    silently replace the first)."""
    taken = _REGISTRY.get(architecture.name)
    if taken is not None and taken != architecture:
        raise ValueError(f"model name {architecture.name!r} is already registered ({taken})")
    _REGISTRY[architecture.name] = architecture
    return architecture


register(
    Architecture(
        "unet_res_att",
        UNetConfig,
        UNet,
        {"residual": True, "attention": True},
        "the seed's architecture: residual blocks and attention-gated skips",
    )
)
register(
    Architecture(
        "unet", UNetConfig, UNet, {"residual": False, "attention": False}, "plain U-Net baseline"
    )
)
register(
    Architecture(
        "dilated_resnet",
        DilatedResNetConfig,
        DilatedResNet,
        {},
        "full-resolution dilated residual network",
    )
)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; unknown names list the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def model_arguments(name: str, **kwargs) -> dict[str, Any]:
    """The full, validated argument dict of architecture ``name`` (its defaults filled in);
    an argument the architecture does not take is refused by name."""
    arch = architecture(name)
    unknown = sorted(set(kwargs) - set(arch.arguments()))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(unknown)}; "
            f"its arguments: {', '.join(arch.arguments())}"
        )
    return asdict(arch.config(**(arch.defaults | kwargs)))


def arguments_from_settings(
    name: str, n_aux: int, base: int, depth: int, residual=None, attention=None
) -> dict[str, Any]:
    """Architecture arguments from the config's ``train.model`` section (one section that
    Tune can search across architectures; each architecture says how it reads it)."""
    arch = architecture(name)
    config = arch.config.from_settings(n_aux, base, depth, residual, attention, arch.defaults)
    return asdict(config)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build architecture ``name`` from its arguments (see :func:`model_arguments`)."""
    return architecture(name).module(**model_arguments(name, **kwargs))
