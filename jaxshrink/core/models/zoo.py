"""Networks as researchers write them: plain Flax, no masks, no widths to override.

The `Sequential` chain covers the theses' networks; the networks people bring are not
chains. A residual add couples the channels of every block in a stage, a U-Net's
concatenation feeds two producers into one convolution, a depthwise convolution has
no channels of its own. These modules are the reference cases for
`jaxshrink.core.graph`, which reads those couplings from the traced function instead
of from a layer list, so they are written exactly as a paper or a tutorial would
write them: a mask would be the one thing a user's model never has.

* `CifarResNet`: the CIFAR-10 ResNet of He et al. 2016 (ResNet-20 to ResNet-110);
* `UNet`: a small U-Net for image-to-image tasks such as edge maps;
* `MobileNetV2Block` and `MobileNetLike`: inverted residual blocks (Sandler et al.
  2018) stacked into a small classifier;
* `DecomposeMeCNN`: thesis 003's MNIST classifier with every convolution trained
  separable, a K x 1 then a 1 x K convolution (DecomposeMe).

All take NHWC images. The two with batch norm take ``train`` (batch statistics when
training, the running ones otherwise, as ``nn.BatchNorm(use_running_average=not
train)``): trace the inference call, ``model.apply(variables, x)``, for the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Flax's momentum is the weight of the old running average: 0.9 is PyTorch's 0.1, the
# value the CIFAR ResNets are usually trained with; epsilon is PyTorch's default.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He et al. initialise convolutions for ReLU networks (their 2015 paper): variance
# 2 / fan_in, which keeps the activations' scale through a deep stack.
_he_normal = nn.initializers.he_normal()


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


def _conv(features: int, kernel: int, stride: int, name: str, **kw) -> nn.Conv:
    """A 'SAME' convolution without bias: the batch norm after it has the shift."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=False,
        kernel_init=_he_normal,
        name=name,
        **kw,
    )


# ---------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN added to the shortcut, then ReLU.

    The shortcut is the identity when the block keeps the shape; when it halves the
    feature map (`stride` 2) or changes the width it is a projection, a strided 1 x 1
    convolution and a batch norm (see `CifarResNet` for why this option).
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = _conv(self.features, 3, self.stride, "conv1")(x)
        h = nn.relu(_batch_norm(train, "bn1")(h))
        h = _conv(self.features, 3, 1, "conv2")(h)
        h = _batch_norm(train, "bn2")(h)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, "proj")(x)
            shortcut = _batch_norm(train, "proj_bn")(shortcut)
        return nn.relu(h + shortcut)


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNet of He et al. 2016 (section 4.2): 6n + 2 layers.

    A 3 x 3 stem convolution to ``widths[0]`` channels with batch norm and ReLU, then
    three stages of n = (depth - 2) / 6 `BasicBlock`s on feature maps of 32, 16 and 8
    pixels (for a 32 x 32 input) with ``widths`` (16, 32, 64) channels, global average
    pooling and a dense layer to the classes. depth 20, 32, 44, 56, 110 are the
    paper's ResNet-20 ... ResNet-110; ResNet-20 has about 0.27 M parameters.

    The first block of stages 2 and 3 halves the map with stride 2 and doubles the
    width. The paper's option A widens the shortcut by padding zeros; this module uses
    option B, a projection (strided 1 x 1 convolution and batch norm). The padded zeros
    of option A are constants added to the stream's new channels, so every channel of
    the stage would meet a constant and the graph would have to keep it; a projection
    produces those channels from weights, and the stage's stream is a group that can
    shrink like any other. It adds 2,752 parameters to ResNet-20 (about 1 %).

    Modules are named ``stem``, ``stem_bn``, ``stage{s}_block{b}`` (s and b from 1, as
    the paper counts) and ``head``.
    """

    depth: int = 20
    widths: Sequence[int] = (16, 32, 64)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        blocks = blocks_per_stage(self.depth)
        if len(self.widths) != 3:
            raise ValueError(f"widths: {tuple(self.widths)}; one per stage, three stages")
        x = _conv(self.widths[0], 3, 1, "stem")(x)
        x = nn.relu(_batch_norm(train, "stem_bn")(x))
        for s, features in enumerate(self.widths):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(features, stride, name=f"stage{s + 1}_block{b + 1}")(x, train)
        x = x.mean(axis=(1, 2))  # global average pooling
        return nn.Dense(self.num_classes, name="head")(x)


def blocks_per_stage(depth: int) -> int:
    """n of a depth-(6n + 2) CIFAR ResNet; raises ValueError for any other depth."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth {depth}: a CIFAR ResNet has 6n + 2 layers, n >= 1 (8, 14, 20, 32, 44, 56, 110)"
        )
    return (depth - 2) // 6


# ---------------------------------------------------------------------- U-Net


class ConvBlock(nn.Module):
    """Two 3 x 3 'SAME' convolutions with bias, each followed by a ReLU."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", name=f"conv{i + 1}")(x)
            x = nn.relu(x)
        return x


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015) for image-to-image tasks.

    Each encoder level is a `ConvBlock` whose output is kept as the skip and then
    max-pooled 2 x 2; ``widths[-1]`` is the bottleneck's width, the others the levels'
    (``widths=(8, 16)``: one level of 8 channels, a bottleneck of 16). Each decoder
    level doubles the map with a 2 x 2 transposed convolution of stride 2 to the
    level's width, concatenates the skip in front of it on the channel axis
    (``[skip, up]``) and applies a `ConvBlock`. A 1 x 1 convolution gives
    `out_channels` logits per pixel (a sigmoid turns one into an edge probability).

    Height and width must be divisible by 2 ** (len(widths) - 1). No batch norm: the
    image tasks this package trains use small batches. Modules are named
    ``down{i}``, ``bottleneck``, ``up{i}`` (the transposed convolution), ``dec{i}``
    and ``out``, i counting levels from the full-resolution one, 0.
    """

    widths: Sequence[int] = (8, 16)
    out_channels: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        *levels, bottom = self.widths
        factor = 2 ** len(levels)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"input of {x.shape[1]} x {x.shape[2]} pixels: the U-Net pools "
                f"{len(levels)} times, so both must be divisible by {factor}"
            )
        skips = []
        for i, features in enumerate(levels):
            x = ConvBlock(features, name=f"down{i}")(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(bottom, name="bottleneck")(x)
        for i in reversed(range(len(levels))):
            x = nn.ConvTranspose(levels[i], (2, 2), strides=(2, 2), name=f"up{i}")(x)
            x = jnp.concatenate([skips[i], x], axis=-1)
            x = ConvBlock(levels[i], name=f"dec{i}")(x)
        return nn.Conv(self.out_channels, (1, 1), name="out")(x)


# ---------------------------------------------------------------------- MobileNetV2


class MobileNetV2Block(nn.Module):
    """The inverted residual block of MobileNetV2 (Sandler et al. 2018).

    A 1 x 1 convolution expands the input `expand` times (batch norm, ReLU6), a 3 x 3
    depthwise convolution filters each channel alone (``feature_group_count`` = its
    channels; batch norm, ReLU6), and a linear 1 x 1 convolution projects to
    `features` (batch norm, no activation: the paper's linear bottleneck). With
    stride 1 and as many channels out as in, the input is added. With ``expand=1``
    there is no expansion convolution (the paper's first block): the depthwise
    convolution then filters the block's input channels themselves.

    Sub-modules: ``expand`` / ``expand_bn`` (when expand > 1), ``depthwise`` /
    ``depthwise_bn``, ``project`` / ``project_bn``.
    """

    features: int
    expand: int = 6
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        channels = x.shape[-1]
        h = x
        if self.expand != 1:
            channels *= self.expand
            h = _conv(channels, 1, 1, "expand")(h)
            h = nn.relu6(_batch_norm(train, "expand_bn")(h))
        h = _conv(channels, 3, self.stride, "depthwise", feature_group_count=channels)(h)
        h = nn.relu6(_batch_norm(train, "depthwise_bn")(h))
        h = _conv(self.features, 1, 1, "project")(h)
        h = _batch_norm(train, "project_bn")(h)
        if self.stride == 1 and x.shape[-1] == self.features:
            h = h + x
        return h


class MobileNetLike(nn.Module):
    """A small MobileNetV2-style classifier for 32 x 32 images.

    A 3 x 3 stem convolution (batch norm, ReLU6), `MobileNetV2Block`s given as
    (expand, features, stride), global average pooling and a dense layer to the
    classes. The default stack follows the paper's first stages at CIFAR scale: a
    non-expanding block, then two pairs of a strided block and a residual one; it
    has no final 1 x 1 convolution, so the pooled features are the last block's.

    Modules are named ``stem``, ``stem_bn``, ``block{i}`` (from 1) and ``head``.
    """

    num_classes: int = 10
    stem_width: int = 16
    stem_stride: int = 1  # 2 halves the map first (ImageNet MobileNets do)
    # (expand, features, stride) per block
    blocks: Sequence[tuple[int, int, int]] = (
        (1, 16, 1),
        (6, 24, 2),
        (6, 24, 1),
        (6, 32, 2),
        (6, 32, 1),
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _conv(self.stem_width, 3, self.stem_stride, "stem")(x)
        x = nn.relu6(_batch_norm(train, "stem_bn")(x))
        for i, (expand, features, stride) in enumerate(self.blocks):
            x = MobileNetV2Block(features, expand, stride, name=f"block{i + 1}")(x, train)
        x = x.mean(axis=(1, 2))  # global average pooling
        return nn.Dense(self.num_classes, name="head")(x)


# ----------------------------------------------------------------- DecomposeMe


class DecomposeMeCNN(nn.Module):
    """A classifier whose convolutions are separable from the start (Alvarez and
    Petersson 2016, "DecomposeMe", as thesis 003 2.5.1 uses it: "instead of separating
    learned convolutions ... forces the separability of convolution operation as a
    hard constraint").

    Each (features, kernel, inner, padding) of `convs` is a K x 1 convolution to
    `inner` channels (no bias) followed by a 1 x K one to `features` (bias, ReLU): the
    K x K convolution 003 wants at N P (L + K) instead of N^2 K L multiplications per
    position. The first two are followed by 2 x 2 max-pooling (003's Table 2.3: conv
    5x5x32, pool, conv 5x5x64, pool, a 7x7 'VALID' conv of 128, dense 10). The inner
    channels are groups of their own, so the search may narrow them too.

    Modules: ``conv{i}_v`` and ``conv{i}`` (from 0) and ``head``.
    """

    convs: Sequence[tuple[int, int, int, str]] = (
        (32, 5, 4, "SAME"),
        (64, 5, 64, "SAME"),
        (128, 7, 128, "VALID"),
    )
    num_classes: int = 10
    pools: int = 2  # max-pooling after each of the first `pools` convolutions

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, (features, kernel, inner, padding) in enumerate(self.convs):
            x = nn.Conv(inner, (kernel, 1), padding=padding, use_bias=False, name=f"conv{i}_v")(x)
            x = nn.relu(nn.Conv(features, (1, kernel), padding=padding, name=f"conv{i}")(x))
            if i < self.pools:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, name="head")(x)
