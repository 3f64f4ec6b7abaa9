"""The DENODET network: one shared encoder, a denoising and a detection decoder.

The architecture follows Yao et al., "DENODET" (IEEE TMI), section III-A:

- a shared encoder of three residual blocks (8, 16, 32 feature maps) with a 2x2 max
  pool between levels, so features exist at full, 1/2 and 1/4 resolution;
- a denoising decoder: at each of two levels, bilinear x2 upsampling, a 3x3 conv,
  concatenation with the encoder features of that level and a residual block
  (16, then 8 feature maps), then a 1x1 conv to the denoised image;
- a detection decoder built the same way, except that each concatenation also takes
  the denoising decoder's features of that level, then a 1x1 conv to heatmap logits.

With the default :class:`NetworkConfig` the network has 68,154 trainable parameters and
costs about 5.0 G multiply-adds (10.0 GFLOP) of convolution per 512 x 512 frame
(:func:`count_parameters`, :func:`count_conv_macs`), whichever normalisation it uses.

Every 3x3 convolution is followed by a normalisation layer. The paper uses instance
normalisation; the default here is batch normalisation (``NetworkConfig.norm``). In
evaluation mode batch norm is a fixed per-channel affine map, so each output pixel
depends only on the input pixels in its receptive field: a large frame cut into
overlapping tiles gives the same result as the whole frame, and the normalisation can be
folded into the preceding convolution for faster inference. Instance norm divides by
statistics of the whole image, so neither holds; it stays available for comparison.
Coordinates are extracted from the heatmap outside the network
(:mod:`napari_denodet.core.localize`), so the module stays a plain image-to-image map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Height and width are padded to a multiple of this (two 2x2 poolings); tiles of a
#: large frame start on multiples of it so that they pool like the whole frame.
STRIDE = 4
#: Smallest padded size: below it the 1/4-resolution level has a single pixel, whose
#: instance norm is identically zero and which batch norm refuses in training mode
#: for a batch of one.
_MIN_SIZE = 8
#: Allowed values of ``NetworkConfig.norm``.
NORMS = ("batch", "instance")
#: Allowed values of ``NetworkConfig.variant``.
VARIANTS = ("joint", "cascaded")


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters that define a :class:`Denodet` network.

    Saved as JSON beside the weights so a model file can be rebuilt exactly.

    Parameters
    ----------
    widths : tuple of int
        Feature maps at full, 1/2 and 1/4 resolution.
    in_channels : int
        Channels of the input image.
    norm : {"batch", "instance"}
        Normalisation after each 3x3 convolution: ``"batch"`` (default; tile-invariant
        and foldable into the convolutions at inference) or ``"instance"`` (as in the
        paper; each frame normalised by its own statistics).
    variant : {"joint", "cascaded"}
        ``"joint"`` builds :class:`Denodet`; ``"cascaded"`` builds
        :class:`CascadedDenodet`, the paper's cDENODET baseline.
    """

    widths: tuple[int, int, int] = (8, 16, 32)
    in_channels: int = 1
    norm: str = "batch"
    variant: str = "joint"

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive integers, got {self.widths!r}")
        if int(self.in_channels) < 1:
            raise ValueError(f"in_channels must be positive, got {self.in_channels!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        # JSON gives lists back; keep the dataclass hashable and comparable.
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "in_channels", int(self.in_channels))

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"widths": [...], "in_channels": ..., "norm": ...}``.
        """
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkConfig:
        """Build a configuration from :meth:`to_dict` output.

        Parameters
        ----------
        data : Mapping
            Keys are field names; missing keys take their defaults (files written
            before ``norm`` existed therefore load as batch norm).

        Returns
        -------
        NetworkConfig
            The configuration.

        Raises
        ------
        ValueError
            If ``data`` holds a key that is not a field (e.g. a newer file format).
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network config keys: {sorted(unknown)}")
        kwargs = dict(data)
        if "widths" in kwargs:
            kwargs["widths"] = tuple(kwargs["widths"])
        return cls(**kwargs)


def _conv_norm(in_ch: int, out_ch: int, norm: str) -> list[nn.Module]:
    # No conv bias: either norm subtracts the channel mean, so a bias would never train.
    layer = nn.BatchNorm2d(out_ch) if norm == "batch" else nn.InstanceNorm2d(out_ch, affine=True)
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), layer]


class _ResidualBlock(nn.Module):
    # Paper form (Fig. 2b): the output of the first ReLU is added to the output of
    # the last normalisation, *before* the final ReLU (as in ResNet).

    def __init__(self, in_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        self.first = nn.Sequential(*_conv_norm(in_ch, out_ch, norm), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            *_conv_norm(out_ch, out_ch, norm),
            nn.ReLU(inplace=True),
            *_conv_norm(out_ch, out_ch, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        skip = self.first(x)
        return F.relu(skip + self.body(skip))


class _UpBlock(nn.Module):
    # Upsampling block (Fig. 2c): bilinear x2, 3x3 conv, concatenation with the skip
    # features, then a residual block. The conv is linear (no norm or ReLU), as drawn.

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.block = _ResidualBlock(out_ch + skip_ch, out_ch, norm)

    def forward(self, x: Tensor, *skips: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.block(torch.cat([self.conv(x), *skips], dim=1))


class Denodet(nn.Module):
    """Joint denoising and particle detection network.

    Parameters
    ----------
    config : NetworkConfig
        Widths, input channels and normalisation.

    Notes
    -----
    ``forward`` takes a float32 batch ``(B, C, H, W)`` in normalised units and returns
    ``(denoised, heatmap_logits)``, each ``(B, 1, H, W)``. Any ``H, W`` is accepted: the
    input is padded at the bottom and right (reflect, or replicate where the image is
    too small to reflect) to a multiple of 4, at least 8, and the outputs are cropped
    back. The heatmap is returned as logits; apply a sigmoid for probabilities.
    """

    def __init__(self, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        norm = config.norm
        self.enc1 = _ResidualBlock(config.in_channels, w1, norm)
        self.enc2 = _ResidualBlock(w1, w2, norm)
        self.enc3 = _ResidualBlock(w2, w3, norm)
        self.deno2 = _UpBlock(w3, w2, w2, norm)
        self.deno1 = _UpBlock(w2, w1, w1, norm)
        # Detection concatenates encoder *and* denoising features at each level.
        self.det2 = _UpBlock(w3, w2 + w2, w2, norm)
        self.det1 = _UpBlock(w2, w1 + w1, w1, norm)
        self.deno_out = nn.Conv2d(w1, 1, 1)
        self.det_out = nn.Conv2d(w1, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Denoise ``x`` and predict its particle heatmap logits.

        Parameters
        ----------
        x : Tensor
            ``(B, C, H, W)`` float batch in normalised units.

        Returns
        -------
        denoised, heatmap_logits : Tensor
            Each ``(B, 1, H, W)``.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        x = _pad_to_stride(x)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.deno2(e3, e2)
        d1 = self.deno1(d2, e1)
        t2 = self.det2(e3, e2, d2)
        t1 = self.det1(t2, e1, d1)
        denoised = self.deno_out(d1)[..., :height, :width]
        logits = self.det_out(t1)[..., :height, :width]
        return denoised, logits


def _pad_to_stride(x: Tensor) -> Tensor:
    height, width = x.shape[-2:]
    pad_h = max(-height % STRIDE, _MIN_SIZE - height)
    pad_w = max(-width % STRIDE, _MIN_SIZE - width)
    if pad_h or pad_w:
        # Reflection needs more pixels than it pads; tiny inputs fall back to edge copies.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x


class _UNet(nn.Module):
    # One encoder and one decoder: the building block of the cascade.

    def __init__(self, in_ch: int, widths: tuple[int, int, int], norm: str) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = _ResidualBlock(in_ch, w1, norm)
        self.enc2 = _ResidualBlock(w1, w2, norm)
        self.enc3 = _ResidualBlock(w2, w3, norm)
        self.up2 = _UpBlock(w3, w2, w2, norm)
        self.up1 = _UpBlock(w2, w1, w1, norm)
        self.out = nn.Conv2d(w1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        return self.out(self.up1(self.up2(e3, e2), e1))


class CascadedDenodet(nn.Module):
    """The paper's cDENODET baseline: a denoising network, then a detection network.

    Two encoder-decoder networks of the same widths as :class:`Denodet`; the detection
    network sees only the denoised image. Trained jointly with the same loss, it
    isolates the benefit of sharing one encoder and passing features between decoders.

    Parameters
    ----------
    config : NetworkConfig
        Widths, input channels and norm (``variant`` is ``"cascaded"``).
    """

    def __init__(self, config: NetworkConfig = NetworkConfig(variant="cascaded")) -> None:
        super().__init__()
        self.config = config
        self.denoiser = _UNet(config.in_channels, config.widths, config.norm)
        self.detector = _UNet(1, config.widths, config.norm)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(denoised, heatmap_logits)``, each ``(B, 1, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        denoised = self.denoiser(_pad_to_stride(x))
        logits = self.detector(denoised)
        return denoised[..., :height, :width], logits[..., :height, :width]


def build_network(config: NetworkConfig) -> nn.Module:
    """Build the network a configuration describes (joint or cascaded)."""
    return CascadedDenodet(config) if config.variant == "cascaded" else Denodet(config)


def train_mode(network: nn.Module, freeze_norm: bool = False) -> None:
    """Put ``network`` in training mode, its batch norms frozen if asked.

    Frozen batch norms use their running statistics, as at inference, while every
    weight still trains: the network adapts to the statistics it will be run with.
    """
    network.train()
    if freeze_norm:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def count_parameters(model: nn.Module) -> int:
    """Count the trainable parameters of ``model``.

    Parameters
    ----------
    model : nn.Module
        Any module.

    Returns
    -------
    int
        Number of scalar parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_conv_macs(model: nn.Module, height: int = 512, width: int = 512) -> int:
    """Count the convolution multiply-adds of one forward pass on one frame.

    Parameters
    ----------
    model : nn.Module
        A network taking ``(1, C, H, W)`` input; ``C`` is read from ``model.config``
        when present, else 1.
    height, width : int
        Frame size.

    Returns
    -------
    int
        Multiply-accumulates of all ``Conv2d`` layers (FLOPs are about twice this);
        normalisation, pooling and upsampling are ignored as they are comparatively cheap.
    """
    total = 0

    def hook(module: nn.Conv2d, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        per_output = module.in_channels // module.groups * module.kernel_size[0]
        total += output.numel() * per_output * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels = getattr(getattr(model, "config", None), "in_channels", 1)
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total
