"""Named model zoos: several models extracted over one dataset by one command.

``python -m engine extract --preset paper --data /data/imagenet/val`` extracts the paper's four
ImageNet-1k classifiers (§2: ResNet-18, ResNet-50, Swin-T, ViT-S) into one store each, over
the same samples in the same order, and prepares every pairing for the dashboard's pages.

Plain data (no torch): the CLI's ``--help``, the job specs and the dashboard read it.

The paper names architectures, not weights; the tags below are timm's weights closest to
what the paper describes (torchvision's ResNets, Microsoft's Swin-T, the AugReg ViT-S).
``α`` is the paper's (appendix B: 0.25 for Swin-T, 2.5 for the others).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from engine.errors import NotFoundError


@dataclass(frozen=True)
class ZooMember:
    """One model of a zoo."""

    key: str  # short name used by reports and as the default store name
    model: str  # model registry name: a timm name with its pretrained tag
    title: str  # how the paper writes it
    alpha: float  # the paper's CovLasso α for this model's logits


@dataclass(frozen=True)
class ZooPreset:
    """A named list of models (one registry for zoos, like the model and dataset registries)."""

    name: str
    description: str
    members: tuple[ZooMember, ...]

    def member(self, key: str) -> ZooMember:
        for m in self.members:
            if m.key == key:
                return m
        raise NotFoundError(f"preset {self.name!r} has no model {key!r}; its models: "
                            f"{', '.join(m.key for m in self.members)}")


PRESETS: dict[str, ZooPreset] = {
    p.name: p
    for p in (
        ZooPreset(
            "paper",
            "the paper's four ImageNet-1k classifiers (ResNet-18, ResNet-50, Swin-T, ViT-S)",
            (
                ZooMember("resnet18", "resnet18.tv_in1k", "ResNet-18", 2.5),
                ZooMember("resnet50", "resnet50.tv_in1k", "ResNet-50", 2.5),
                ZooMember("swin-t", "swin_tiny_patch4_window7_224.ms_in1k", "Swin-T", 0.25),
                ZooMember("vit-s", "vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S", 2.5),
            ),
        ),
    )
}


def get_preset(name: str) -> ZooPreset:
    """A preset by name; an unknown name raises listing the nearest and all valid ones."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
    nearest = f"did you mean {', '.join(close)}? " if close else ""
    raise NotFoundError(f"unknown preset {name!r}; {nearest}valid presets: {', '.join(PRESETS)}")


def pair_alpha(target_alpha: float, source_alpha: float) -> float:
    """The paper gives α per model, not per pair: a pairing takes the smaller of its two
    models' α (0.25 whenever Swin-T is on either side), which keeps more sources, never fewer."""
    return min(target_alpha, source_alpha)
