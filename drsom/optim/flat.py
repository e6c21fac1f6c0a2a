"""DRSOM's parameters in one flat buffer: the layout, its views, and re-packing when it changes.

Every ``p.data`` of a trainable parameter is a view of one contiguous vector (keeping each
parameter's memory layout, e.g. channels-last), so the step's k x k reductions over all
parameters are single matrix products. ``FlatParams`` is the part of the optimizer that keeps
that true when the trainable set or its storage changes (``add_param_group``,
``requires_grad_``, ``model.to()``); the optimizer says which per-element state follows the
parameters (``_state_rows``) and lays it out anew (``_relayout``).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from drsom.cfg.checks import DRSOM, NON_NEGATIVE, is_non_negative, positive, real


def dense_strides(p: torch.Tensor) -> tuple[int, ...]:
    """Strides that keep p's memory layout (contiguous or channels-last) in a flat buffer."""
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last):
        return p.stride()
    if p.dim() == 5 and p.is_contiguous(memory_format=torch.channels_last_3d):
        return p.stride()
    return torch.empty(p.shape, device="meta").stride()


def shares(t: torch.Tensor, buf: torch.Tensor) -> bool:
    return t.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()


def check_parameters(params: list[torch.Tensor]) -> None:
    """One dtype and device, float32 or float64: what the flat buffer and the k x k model need."""
    kinds = sorted({f"{p.dtype} on {p.device}" for p in params})
    if len(kinds) > 1:
        raise ValueError(
            f"DRSOM: all trainable parameters must share one dtype and device, got {kinds}; "
            f"move or cast the whole model (model.to(...)), or freeze the odd ones"
        )
    dtype = params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"DRSOM: parameters must be float32 or float64, got {dtype} (16-bit floats cannot "
            f"carry the step and its k x k model); keep the parameters in float32 and pass "
            f"autocast= to make_closure for mixed precision"
        )


class FlatParams(Optimizer):
    """An optimizer whose trainable parameters are views of one flat buffer ``_flat``.

    ``_params`` are the packed parameters, ``_layout`` their ``(shape, strides, offset)`` in the
    buffer, ``_reached`` the ids of those the last backward reached (the rest had no gradient).
    A subclass calls ``_init_flat`` before ``Optimizer.__init__`` and ``_repack`` once its own
    state exists, and defines the state that follows the parameters: ``_state_rows()``, its flat
    per-element rows in the buffer's layout, and ``_relayout(numel, dtype, device, carry,
    old_params)``, which allocates them for a new layout and calls ``carry(rows)`` to fill them
    from the old (rows in ``_state_rows``' order; ``old_params`` were packed before).
    """

    def _init_flat(self) -> None:
        self._params: list[torch.Tensor] = []
        self._flat: torch.Tensor | None = None
        self._layout: list[tuple] = []
        self._hooks: dict[int, object] = {}
        self._reached: set[int] = set()

    def add_param_group(self, param_group: dict) -> None:
        """Add a param group, as ``torch.optim``; its parameters are trained from the next step.

        A group without ``lr`` takes the current step bound (DRSOM takes one step for all
        groups, so all must share it); the flat buffer is re-packed to hold the new parameters,
        whose direction memory and moving averages start at zero.
        """
        if self.param_groups and "lr" not in param_group:
            param_group = {**param_group, "lr": self.param_groups[0]["lr"]}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            positive("lr", group["lr"], prefix=DRSOM)
            real("weight_decay", group["weight_decay"], NON_NEGATIVE, is_non_negative,
                 prefix=DRSOM)  # fmt: skip
            if group["lr"] != self.param_groups[0]["lr"]:
                raise ValueError(
                    f"DRSOM: all param groups must share lr (DRSOM takes one step for all), got "
                    f"lr={group['lr']!r} for a group beside lr={self.param_groups[0]['lr']!r}; "
                    f"leave lr out of the new group"
                )
            if self._flat is not None:  # after the constructor: pack the new parameters now
                self._ensure_packed()
        except ValueError:
            self.param_groups.pop()
            raise

    def _trainable(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _ensure_packed(self) -> None:
        """Re-pack when the trainable parameters are not those of the flat buffer any more.

        That happens when a param group was added, a parameter was frozen or unfrozen
        (``requires_grad_``), or the model was moved or cast (``model.to()``, ``.double()``),
        which rebinds ``p.data``. A cheap identity and address check per step.
        """
        live = self._trainable()
        if len(live) == len(self._params) and all(
            p is q and p.data_ptr() == ptr
            for p, q, ptr in zip(live, self._params, self._ptrs, strict=True)
        ):
            return
        if not live:
            raise ValueError(
                "DRSOM: no trainable parameters (requires_grad=True) are left in the param groups"
            )
        check_parameters(live)
        self._repack(live)

    def _views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-shaped views of a flat buffer (a row of R or a scratch vector)."""
        base = buf.storage_offset()
        return [torch.as_strided(buf, s, st, base + o) for s, st, o in self._layout]

    def _repack(self, live: list[torch.Tensor]) -> None:
        """Pack ``live`` into one flat buffer; each ``p.data`` becomes a view of it.

        Per-element state (``_state_rows``) follows each parameter that was packed before with
        the same shape, in the new dtype and device; parameters new to the buffer start from zero
        state. Parameters that left it (frozen) get storage of their own, so the old buffer is
        freed.
        """
        old_params, old_rows = self._params, self._state_rows()
        old_layout = {id(p): lay for p, lay in zip(old_params, self._layout, strict=True)}
        old_flat = self._flat
        first = live[0]
        dtype, device = first.dtype, first.device
        numel = sum(p.numel() for p in live)
        flat = torch.empty(numel, dtype=dtype, device=device)
        layout, offset = [], 0
        for p in live:
            strides = dense_strides(p)
            view = torch.as_strided(flat, p.shape, strides, offset)
            view.copy_(p.detach())
            p.data = view
            layout.append((p.shape, strides, offset))
            offset += p.numel()

        def carry(new_rows: list[torch.Tensor]) -> None:
            for p, (shape, strides, off) in zip(live, layout, strict=True):
                old = old_layout.get(id(p))
                if old is None or old[0] != shape:
                    continue
                for src, dst in zip(old_rows, new_rows, strict=True):
                    o_shape, o_strides, o_off = old
                    piece = torch.as_strided(src, o_shape, o_strides, src.storage_offset() + o_off)
                    torch.as_strided(dst, shape, strides, dst.storage_offset() + off).copy_(piece)

        self._relayout(numel, dtype, device, carry, old_params)
        for p in old_params:
            if old_flat is not None and shares(p, old_flat):
                p.data = p.data.clone()  # left the buffer (frozen): storage of its own
        for p in live:
            if id(p) not in self._hooks:
                self._hooks[id(p)] = p.register_post_accumulate_grad_hook(
                    lambda q, seen=self._reached: seen.add(id(q))
                )
        self._params, self._flat, self._layout = live, flat, layout
        self._device, self._numel = device, numel
        self._ptrs = [p.data_ptr() for p in live]
