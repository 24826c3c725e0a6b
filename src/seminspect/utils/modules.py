"""Helpers for torch modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode and afterwards restore EVERY submodule's own flag.

    ``module.train(was_training)`` would be wrong: it is recursive, so a freshly built (training)
    wrapper around an eval-mode model would leave the model in training mode after export, with
    BatchNorm then using batch statistics and updating its running averages on every call.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
