"""Epoch loaders over an in-memory uint8 image tensor.

Every random choice of an epoch (the shuffle order, each example's crop offset and flip) is drawn up
front, when the epoch starts, from a fresh ``torch.Generator`` seeded with a hash of (seed, epoch).
That is what makes resume bitwise: epoch e yields the same batches whether the process has been
running since epoch 0 or was started at e, and nothing depends on the global RNG that the model's
dropout and the optimizer also consume.

The plan is always drawn on the CPU, also when the images live on a GPU, so the batches of an epoch
do not depend on the device either (a CPU run and a GPU run of the same seed see the same data
order, and the GPU path can be tested against the CPU one). It is 4 x N small integers once per
epoch; copying them to the device costs far less than one training step.

Where the images live decides the path:

* host-resident (``storage`` is the CPU): each batch is gathered, cropped and flipped on the host in
  uint8, moved to ``device`` (pinned and asynchronous for CUDA), then converted to float and
  normalised there. ``num_workers`` threads can prepare batches ahead; batches are independent
  given the plan, so the threads do not change the result.
* device-resident (``storage`` is the training device, airbench style): the whole dataset sits on
  the GPU as uint8 and every step above runs there; no host work per batch beyond kernel launches.

Both are the same code below, so they have the same augmentation distribution by construction.

Data-parallel runs (``shard=(rank, processes)``) draw the same plan on every process and cut every
global batch of ``batch_size`` examples into contiguous shards, rank r taking examples
[r n / P, (r + 1) n / P) of a batch of n: the run sees the same batches in the same order whatever
its number of processes; only the last, partial batch may have shards one example apart.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int, stream: str = "train") -> int:
    """A 63-bit seed that depends only on (seed, epoch, stream), stable across processes."""
    digest = hashlib.blake2b(f"{stream}:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class EpochLoader:
    """Iterate over (inputs, targets) batches; one full pass is one epoch.

    Inputs are float32, normalised, NCHW (channels_last strides if asked) on ``device``; targets are
    int64 on ``device``. The last, partial batch is kept (drop_last=False).

    Epoch numbering: ``set_epoch(e)`` chooses the epoch the next pass produces; each pass then
    advances it by one, so a loop that never calls ``set_epoch`` still gets a fresh order each
    epoch.
    A resumed run must call ``set_epoch(start_epoch)`` (calling it every epoch is the safe habit).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        num_workers: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise ValueError("images must be a uint8 tensor of shape (N, H, W, C) with C in {1, 3}")
        if targets.shape != images.shape[:1]:
            raise ValueError("targets must have one entry per image")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (rank, processes) with 0 <= rank < processes: {shard}")
        self.device = torch.device(device)
        self.storage = images.device
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.rank, self.processes = int(shard[0]), int(shard[1])
        self.channels_last = bool(channels_last)
        self.num_workers = int(num_workers) if self.storage.type == "cpu" else 0
        self.epoch = 0
        self.num_examples, self.height, self.width, channels = images.shape

        p = self.crop_padding
        # Pad once up front (zeros, i.e. black, like torchvision's RandomCrop fill) so a crop is a
        # plain gather with in-range indices; it costs (1 + 2p/H)^2 the memory of the raw images.
        self._images = torch.nn.functional.pad(images, (0, 0, p, p, p, p)) if p else images
        self._images = self._images.contiguous()
        self._targets = targets.to(device=self.storage, dtype=torch.int64)
        # x_norm = x_uint8 * scale + shift, i.e. (x / 255 - mean) / std, per channel (last dim).
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise ValueError(f"mean and std need {channels} entries")
        self._scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._shift = (-mean_t / std_t).to(self.device)
        self._rows = torch.arange(self.height, device=self.storage)
        self._cols = torch.arange(self.width, device=self.storage)
        self._cols_flipped = self._cols.flip(0)

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def global_size(self, batch: int) -> int:
        """How many examples global batch ``batch`` (0-based) has, over all shards."""
        return min(self.batch_size, self.num_examples - batch * self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> dict[str, torch.Tensor]:
        """The epoch's random choices, on the CPU: order, crop offsets in [0, 2p], flip flags."""
        n = self.num_examples
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        plan = {"order": torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)}
        if self.crop_padding:
            span = 2 * self.crop_padding + 1
            plan["dy"] = torch.randint(span, (n,), generator=g)
            plan["dx"] = torch.randint(span, (n,), generator=g)
        if self.flip:
            plan["flip"] = torch.randint(2, (n,), generator=g, dtype=torch.bool)
        return plan

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch = epoch + 1
        plan = self.plan(epoch)
        if self.storage.type != "cpu":
            plan = {k: v.to(self.storage, non_blocking=True) for k, v in plan.items()}
        starts = range(0, self.num_examples, self.batch_size)
        if self.num_workers == 0:
            return (self._batch(plan, s) for s in starts)
        return self._prefetching(plan, starts)

    def _prefetching(self, plan: dict[str, torch.Tensor], starts: range) -> Iterator[Batch]:
        depth = 2 * self.num_workers
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="epoch-loader") as pool:
            pending = deque(pool.submit(self._host_part, plan, s) for s in starts[:depth])
            for nxt in starts[depth:]:
                x, y = pending.popleft().result()
                pending.append(pool.submit(self._host_part, plan, nxt))
                yield self._device_part(x, y)
            while pending:
                yield self._device_part(*pending.popleft().result())

    def _batch(self, plan: dict[str, torch.Tensor], start: int) -> Batch:
        return self._device_part(*self._host_part(plan, start))

    def _host_part(self, plan: dict[str, torch.Tensor], start: int) -> Batch:
        """Gather, crop and flip in uint8 where the images are stored (this process's shard)."""
        n = min(self.batch_size, self.num_examples - start)
        sl = slice(
            start + self.rank * n // self.processes, start + (self.rank + 1) * n // self.processes
        )
        idx = plan["order"][sl]
        if not self.crop_padding and not self.flip:
            # evaluation (in order) takes a view: no copy until the transfer
            x = self._images[idx] if self.shuffle else self._images[sl]
        else:
            rows = self._rows.expand(len(idx), -1)
            cols = self._cols.expand(len(idx), -1)
            if self.crop_padding:
                rows = rows + plan["dy"][sl, None]
                cols = cols + plan["dx"][sl, None]
            if self.flip:
                # Reading the crop window's columns right to left equals cropping then mirroring.
                cols = torch.where(plan["flip"][sl, None], self._cols_flipped + cols[:, :1], cols)
            x = self._images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        y = self._targets[idx]
        if self.device.type == "cuda" and self.storage.type == "cpu":
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def _device_part(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Move (uint8, so 4x fewer bytes) to the device, then convert and normalise there."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        x = torch.addcmul(self._shift, x.float(), self._scale)  # NHWC, broadcast over channels
        # NHWC permuted to NCHW *is* channels_last in memory; plain NCHW needs one copy.
        x = x.permute(0, 3, 1, 2)
        if not self.channels_last:
            x = x.contiguous()
        return x, y
