"""The glyph world's architectures, registered in timm's own registry.

They are built by ``timm.create_model`` like any other model and carry a ``pretrained_cfg``
that ``timm.data.resolve_data_config`` understands (one channel, 32×32, mean 0.5, std 0.5):

* ``nde_glyph_cnn`` — a plain VGG-style CNN (:class:`GlyphCNN`);
* ``nde_glyph_resnet`` — a ResNet-10 (timm's ``ResNet``);
* ``nde_glyph_vit`` — a hybrid ViT (timm's ``VisionTransformer`` over a convolutional stem).

Each takes ``rank``: 0 gives the usual linear classifier; ``rank = r`` gives a
:class:`LowRankHead`, features → r → classes, so the logits span at most r dimensions (plus
the bias). A rank well below the number of classes is what an ImageNet classifier has anyway
(a 512- to 2,048-wide penultimate layer for 1,000 to 21,843 classes); on 1,000 glyph classes
a small r is what makes a logit a combination of *few* others (docs/extract-and-demo.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import HybridEmbed
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

GLYPH_MEAN, GLYPH_STD = (0.5,), (0.5,)
RANKED_ARCHS = frozenset({"nde_glyph_cnn", "nde_glyph_resnet", "nde_glyph_vit"})  # take ``rank``


class LowRankHead(nn.Module):
    """A classifier whose logits span at most ``rank`` dimensions: ``fc(proj(x))``, the
    projection without a bias (a rank-``rank`` factorisation of one linear layer)."""

    def __init__(self, in_features: int, num_classes: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(in_features, rank, bias=False)
        self.fc = nn.Linear(rank, num_classes)
        self.in_features, self.out_features = in_features, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(x))


def classifier(in_features: int, num_classes: int, rank: int = 0) -> nn.Module:
    """A linear classifier, or a :class:`LowRankHead` when ``rank`` > 0; none (the pooled
    features, timm's convention) when ``num_classes`` is 0."""
    if rank < 0 or rank != int(rank):
        raise ValueError(f"rank must be an integer >= 0 (0: a plain linear head); got {rank!r}")
    if num_classes == 0:
        return nn.Identity()
    return LowRankHead(in_features, num_classes, rank) if rank else nn.Linear(in_features, num_classes)


def _glyph_cfg(**kwargs: Any) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (1, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": GLYPH_MEAN,
        "std": GLYPH_STD,
        "license": "same as this project",
        **kwargs,
    }


# timm's register_model reads this module-level name for the entrypoints below
default_cfgs = generate_default_cfgs(
    {
        "nde_glyph_resnet.glyphs": _glyph_cfg(first_conv="conv1", classifier="fc"),
        "nde_glyph_vit.glyphs": _glyph_cfg(first_conv="patch_embed.backbone.0", classifier="head"),
        "nde_glyph_cnn.glyphs": _glyph_cfg(first_conv="features.0", classifier="head"),
    }
)


@register_model
def nde_glyph_resnet(pretrained: bool = False, rank: int = 0, **kwargs: Any) -> ResNet:
    """ResNet-10 (one BasicBlock per stage, 32-64-128-256 channels) for 32×32 glyphs.

    The ImageNet stem (7×7 stride-2 conv + max-pool, a 4× reduction) would leave 8×8 maps of
    a 32-pixel glyph, losing its accents; a 3×3 stride-1 conv + max-pool keeps 16×16.
    """
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), in_chans=1)
    model = build_model_with_cfg(ResNet, "nde_glyph_resnet", pretrained, **dict(args, **kwargs))
    model.conv1 = nn.Conv2d(kwargs.get("in_chans", 1), 64, 3, stride=1, padding=1, bias=False)
    model.fc = classifier(model.num_features, model.num_classes, rank)
    return model


class ConvStem(nn.Sequential):
    """Three 3×3 stride-2 conv + BN + GELU layers: 32×32 pixels -> 4×4 tokens of ``width[-1]``."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128)):
        layers: list[nn.Module] = []
        for cin, cout in zip((in_chans, *widths[:-1]), widths):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
        super().__init__(*layers)
        self.num_features = widths[-1]  # what timm's HybridEmbed reads


@register_model
def nde_glyph_vit(pretrained: bool = False, rank: int = 0, **kwargs: Any) -> VisionTransformer:
    """A small hybrid ViT for 32×32 glyphs: a conv stem makes 4×4 = 16 tokens, then a
    transformer (width 128, depth 6, 4 heads, class token, learned positions).

    A plain ViT with 4×4 patches (64 tokens) trains at ~40 images/s on one shared CPU core,
    too slow to train here; the convolutional stem ("early convolutions help transformers
    see better", Xiao et al. 2021) cuts the tokens to 16 and makes it learn from few epochs.
    """
    in_chans = kwargs.pop("in_chans", 1)
    embed = partial(HybridEmbed, backbone=ConvStem(in_chans), feature_size=4, feature_ratio=8)
    args = dict(img_size=32, patch_size=1, in_chans=in_chans, embed_dim=128, depth=6, num_heads=4,
                mlp_ratio=2.0, embed_layer=embed)
    model = build_model_with_cfg(VisionTransformer, "nde_glyph_vit", pretrained, **dict(args, **kwargs))
    model.head = classifier(model.num_features, model.num_classes, rank)
    return model


class GlyphCNN(nn.Module):
    """Four conv-BN-ReLU-max-pool blocks (32-64-128-256 channels), global pooling, a classifier.

    The applications' default backbone (``glyph-cnn``): among the small networks we measured
    on 32×32 glyphs the fastest to train on a 2-core CPU, so that §3.2 trains a backbone and
    a baseline from scratch within minutes (docs/jobs-and-training.md).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 1,
                 channels: tuple[int, ...] = (32, 64, 128, 256), rank: int = 0, **kwargs: Any):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in zip((in_chans, *channels[:-1]), channels):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.num_classes, self.num_features = num_classes, channels[-1]
        self.head = classifier(channels[-1], num_classes, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@register_model
def nde_glyph_cnn(pretrained: bool = False, **kwargs: Any) -> GlyphCNN:
    """``glyph-cnn`` (:class:`GlyphCNN`) for 32×32 glyphs."""
    return build_model_with_cfg(GlyphCNN, "nde_glyph_cnn", pretrained, **kwargs)
