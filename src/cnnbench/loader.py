"""Batches from a split that lives on the device as uint8.

The whole split is moved to the device once; each batch is augmented (on the uint8
pixels, as torchvision's transforms do) and normalised there, with vectorised tensor ops
and no per-image Python work. Randomness comes from one torch.Generator, so a run is
reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnbench.config import Augment


class DeviceSplit:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std,
                 device: torch.device):
        self.images = images.to(device)  # uint8 N,C,H,W: a quarter of float32's memory
        self.labels = labels.to(device)
        self.device = device
        # on the device once, not copied there for every batch
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                augment: Augment | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (with ``generator``) or in order; the last batch may be short."""
        n = len(self)
        order = (torch.randperm(n, generator=generator, device=generator.device)
                 if generator is not None else torch.arange(n, device=self.device))
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.images[idx]
            if augment is not None and generator is not None:
                x = apply_augment(x, augment, generator)
            yield normalize(x, self.mean, self.std), self.labels[idx]


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N,C,H,W -> the float input the models are trained on; ``mean`` and ``std``
    per channel, in [0, 1] units (lists, or tensors already on the images' device)."""
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(mean, device=images.device).view(shape)
    std = torch.as_tensor(std, device=images.device).view(shape)
    return (images.float().div_(255) - mean) / std


def apply_augment(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Keras-style shift, random crop after zero padding, horizontal flip and cutout, for a
    whole batch.

    Runs on the uint8 pixels before normalisation, so padding and cutout are black, as
    with torchvision's RandomCrop(padding=p) and the usual cutout on raw images.
    """
    n, _, h, w = x.shape
    dev = x.device

    def randint(high: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, high, size, generator=gen, device=gen.device).to(dev)

    if aug.shift:
        x = keras_shift(x, aug.shift, gen)
    if aug.crop_padding:
        p = aug.crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy, dx = randint(2 * p + 1, (n,)), randint(2 * p + 1, (n,))
        rows = (torch.arange(h, device=dev)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=dev)[None, :] + dx[:, None])[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None],
                   torch.arange(x.shape[1], device=dev)[None, :, None, None], rows, cols]
    if aug.flip:
        flip = randint(2, (n,)).bool()[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    if aug.cutout:
        s = aug.cutout
        cy, cx = randint(h, (n,)), randint(w, (n,))
        ys = torch.arange(h, device=dev)[None, :]
        xs = torch.arange(w, device=dev)[None, :]
        in_y = ((ys - cy[:, None]).abs() <= (s - 1) // 2)[:, :, None]
        in_x = ((xs - cx[:, None]).abs() <= (s - 1) // 2)[:, None, :]
        x = x * ~(in_y & in_x)[:, None]
    return x


def keras_shift(x: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Keras ImageDataGenerator's ``width_shift_range=height_shift_range=fraction``: each
    image moved by uniform(-fraction, fraction) times its side, in each direction.

    As Keras does it (scipy's affine_transform, order 1, fill_mode 'nearest'): the shift
    is not a whole number of pixels, so pixels are interpolated bilinearly, which blurs
    the training images a little, and the edge pixels are repeated into the gap, where
    ``crop_padding`` shifts by whole pixels and fills with black.
    """
    n, _, h, w = x.shape
    offsets = (torch.rand(n, 2, generator=gen, device=gen.device).to(x.device) * 2 - 1) * fraction
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # with align_corners=True the first and last pixel centres sit at -1 and 1
    theta[:, 0, 2] = 2 * offsets[:, 0] * w / (w - 1)
    theta[:, 1, 2] = 2 * offsets[:, 1] * h / (h - 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=True)
    moved = torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear",
                                            padding_mode="border", align_corners=True)
    return moved.round_().to(torch.uint8)
