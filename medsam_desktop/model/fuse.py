"""Re-parameterisation for inference: replace every module that has ``fuse()`` by its fused form."""

from __future__ import annotations

from torch import nn


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fuse conv+BN and RepVGG branches in place (bottom-up) and return the model in eval mode.

    Only call on a model whose BatchNorm statistics are final (after training). Leaves no BatchNorm
    behind in blocks that define ``fuse()``.
    """
    model.eval()
    _fuse_children(model)
    return model


def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            setattr(module, name, fuse())
        else:
            _fuse_children(child)
