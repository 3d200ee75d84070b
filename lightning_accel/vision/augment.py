"""Batch-level augmentation that runs on whatever device the batch is on.

The reference pipeline resizes each image on the loader workers and does everything else (random
resized crop, flip, rotation, zoom, perspective warp, lighting) on whole batches on the GPU, so data
loading keeps up with a fast accelerator. All geometric steps are folded into one sampling grid, so
each image is resampled once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.empty(n, device=like.device, dtype=torch.float32).uniform_(low, high)


def _happens(n: int, p: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device) < p


class BatchAugment(nn.Module):
    """Random-resized-crop to `size` plus the reference's affine, warp and lighting augmentation.

    Input: float images in [0, 1], shape (B, C, H, W). Output: (B, C, size, size) in [0, 1].
    Defaults follow the reference (`aug_transforms(min_scale=0.5)`): crops covering 50-100 % of
    the image with aspect ratio 3/4-4/3, horizontal flips, rotation up to 10 degrees, zoom up to
    1.1, perspective warp up to 0.2 and lighting changes up to 0.2, the last four each applied to
    75 % of the images.
    """

    def __init__(
        self,
        size: int,
        min_scale: float = 0.5,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        max_rotate: float = 10.0,
        max_zoom: float = 1.1,
        max_warp: float = 0.2,
        max_lighting: float = 0.2,
        p_affine: float = 0.75,
        p_lighting: float = 0.75,
    ) -> None:
        super().__init__()
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        if max_zoom < 1:
            raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
        if not 0 <= max_lighting < 1:
            raise ValueError(f"max_lighting must be in [0, 1), got {max_lighting}")
        self.size = size
        self.min_scale, self.ratio, self.flip = min_scale, ratio, flip
        self.max_rotate, self.max_zoom, self.max_warp = max_rotate, max_zoom, max_warp
        self.max_lighting, self.p_affine, self.p_lighting = max_lighting, p_affine, p_lighting

    def forward(self, x: Tensor) -> Tensor:
        grid = self.sampling_grid(x)
        out = F.grid_sample(x, grid.to(x.dtype), "bilinear", "reflection", align_corners=False)
        if self.max_lighting > 0:
            out = self.lighting(out)
        return out

    def sampling_grid(self, x: Tensor) -> Tensor:
        """Where each output pixel samples the input, in grid_sample's [-1, 1] coordinates."""
        n = x.shape[0]
        lin = torch.linspace(-1 + 1 / self.size, 1 - 1 / self.size, self.size, device=x.device)
        v, u = torch.meshgrid(lin, lin, indexing="ij")
        points = torch.stack([u, v], -1).reshape(1, -1, 2).expand(n, -1, -1)
        points = self._affine(points, x)
        if self.max_warp > 0:
            points = self._warp(points, x)
        points = self._crop(points, x)
        return points.reshape(n, self.size, self.size, 2)

    def _crop(self, points: Tensor, x: Tensor) -> Tensor:
        # Map the output square onto a random box covering min_scale..1 of the image area.
        n = x.shape[0]
        area = _uniform(n, self.min_scale, 1.0, x)
        log_ratio = _uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), x)
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, device=x.device) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, device=x.device) * 2 - 1) * (1 - h)
        scale = torch.stack([w, h], -1)[:, None]
        center = torch.stack([cx, cy], -1)[:, None]
        return points * scale + center

    def _affine(self, points: Tensor, x: Tensor) -> Tensor:
        n = x.shape[0]
        # Rotation and zoom each happen to p_affine of the images, independently, as the reference.
        rotate, zoom_in = _happens(n, self.p_affine, x), _happens(n, self.p_affine, x)
        angle = torch.deg2rad(_uniform(n, -self.max_rotate, self.max_rotate, x)) * rotate
        zoom = torch.where(zoom_in, _uniform(n, 1.0, self.max_zoom, x), torch.ones_like(angle))
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        if self.flip:
            mirror = torch.where(_happens(n, 0.5, x), -1.0, 1.0)
            matrix = matrix * torch.stack([mirror, torch.ones_like(mirror)], -1)[:, None, :]
        return points @ matrix.transpose(1, 2)

    def _warp(self, points: Tensor, x: Tensor) -> Tensor:
        # Perspective warp: move the corners by up to max_warp and follow the homography.
        n = x.shape[0]
        apply = _happens(n, self.p_affine, x)
        mx = _uniform(n, -self.max_warp, self.max_warp, x) * apply
        my = _uniform(n, -self.max_warp, self.max_warp, x) * apply
        src = points.new_tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
        shift = torch.stack(
            [
                torch.stack([mx, my], -1),
                torch.stack([-mx, -my], -1),
                torch.stack([-mx, my], -1),
                torch.stack([mx, -my], -1),
            ],
            1,
        )
        dst = src + shift
        h = homography(src.expand(n, -1, -1), dst)
        ones = torch.ones_like(points[..., :1])
        mapped = torch.cat([points, ones], -1) @ h.transpose(1, 2)
        return mapped[..., :2] / mapped[..., 2:]

    def lighting(self, x: Tensor) -> Tensor:
        """Random contrast and brightness, applied in logit space so values stay in (0, 1)."""
        n = x.shape[0]
        m = self.max_lighting
        shape = (n, 1, 1, 1)
        contrast = _uniform(n, math.log(1 - m), -math.log(1 - m), x).exp()
        contrast = torch.where(_happens(n, self.p_lighting, x), contrast, 1.0).view(shape)
        brightness = torch.logit(_uniform(n, 0.5 * (1 - m), 0.5 * (1 + m), x))
        brightness = torch.where(_happens(n, self.p_lighting, x), brightness, 0.0).view(shape)
        logits = torch.logit(x.float().clamp(1e-4, 1 - 1e-4))
        return torch.sigmoid(logits * contrast + brightness).to(x.dtype)


def homography(src: Tensor, dst: Tensor) -> Tensor:
    """The 3x3 projective maps (batched) sending the four points `src` to `dst`, each (B, 4, 2)."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    b = torch.cat([u, v], 1)
    coeffs = torch.linalg.solve(a, b)
    last = torch.ones(n, 1, device=src.device, dtype=src.dtype)  # h33 fixed to 1
    return torch.cat([coeffs, last], 1).view(n, 3, 3)


def center_resize(x: Tensor, size: int) -> Tensor:
    """Deterministic validation transform: centre square crop, then resize to `size`."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    if side == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Per-channel normalization of a (B, C, H, W) batch."""
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t
