"""A segment's state as one flat vector, and the spare segments a party keeps between hand-offs.

A weights message carries a segment's whole state (parameters and buffers, in ``state_dict``
order) as one flat float32 vector (:func:`flatten_state`, :func:`load_flat_state`).

A relay client gives its segment up after every turn and gets it back a turn later. Rebuilding
the module for every hand-off (or re-allocating it tensor by tensor) costs more than the
client's whole turn on a small shard, so a party keeps what it gave up as a :class:`Spares`
entry: the module itself, whose state tensors are views into one flat buffer
(:class:`FlatSegment`). Giving it up frees that buffer's storage (no memory stays behind:
the bytes held are one segment's only while the party holds it); taking it back re-allocates
the storage and copies the received vector in with one copy. Sending it is one copy of the
buffer. The values, their order and every tensor's shape and strides are those of the
module built the usual way, so training gives the same numbers to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nopeek.errors import ChannelError


def flatten_state(module: nn.Module) -> Tensor:
    """A module's whole state (parameters and buffers) as one flat float32 vector (P,).

    >>> flatten_state(nn.Linear(3, 2)).shape
    torch.Size([8])
    """
    parts = [t.detach().reshape(-1).to(torch.float32).cpu() for t in module.state_dict().values()]
    return torch.cat(parts) if parts else torch.zeros(0)


def load_flat_state(module: nn.Module, flat: Tensor) -> None:
    """Inverse of :func:`flatten_state`: copy ``flat`` (P,) into ``module``'s state in place.

    >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> load_flat_state(b, flatten_state(a))
    >>> torch.equal(a.weight, b.weight)
    True
    """
    state = module.state_dict()
    _check_size(flat, sum(t.numel() for t in state.values()))
    offset = 0
    with torch.no_grad():
        for t in state.values():
            n = t.numel()
            t.copy_(flat[offset : offset + n].reshape(t.shape).to(t.dtype))
            offset += n


def _check_size(flat: Tensor, total: int) -> None:
    if flat.dim() != 1 or flat.numel() != total:
        raise ChannelError(
            f"weights message holds {flat.numel()} values but the segment has {total}; "
            "sender and receiver must run the same architecture"
        )


class FlatSegment:
    """``module`` with its state tensors (``state_dict`` order) re-pointed into one flat float32
    buffer (P,) on their device; :meth:`adopt` returns None where that is not possible (a
    non-float32 or shared tensor, tensors on several devices, a subclass parameter).

    >>> seg = FlatSegment.adopt(nn.Linear(3, 2))
    >>> seg.free(); seg.load(torch.arange(8.0))
    >>> seg.module.bias.tolist(), torch.equal(seg.export(), torch.arange(8.0))
    ([6.0, 7.0], True)
    """

    def __init__(self, module: nn.Module, flat: Tensor, tensors: list[Tensor]) -> None:
        self.module, self.flat, self._tensors = module, flat, tensors
        self._nbytes = flat.numel() * flat.element_size()
        self.owned = True  # the buffer is this segment's alone (False: shared, copy-on-write)
        self._before: Tensor | None = None  # the shared buffer :meth:`own` copied

    @classmethod
    @torch.no_grad()
    def adopt(cls, module: nn.Module) -> FlatSegment | None:
        """Re-point ``module``'s state into one buffer (same values); None if it cannot be."""
        tensors = list(module.state_dict(keep_vars=True).values())
        devices = {t.device for t in tensors}
        plain = all(type(t) in (Tensor, nn.Parameter) for t in tensors)
        unique = len({id(t) for t in tensors}) == len(tensors)
        if not tensors or len(devices) != 1 or not plain or not unique:
            return None
        if any(t.dtype != torch.float32 for t in tensors):
            return None
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        offset = 0
        for t in tensors:
            n = t.numel()
            t.data = flat[offset : offset + n].view(t.shape)
            offset += n
        return cls(module, flat, tensors)

    def intact(self) -> bool:
        """Whether every state tensor still lives in the buffer (a ``.to()`` would move it)."""
        base, offset = self.flat.data_ptr(), 0
        for t in self._tensors:
            if t.data_ptr() != base + offset * 4 or not t.is_contiguous():
                return False
            offset += t.numel()
        return True

    def export(self) -> Tensor:
        """A copy of the state as a flat float32 vector on the CPU (P,): :func:`flatten_state`."""
        return self.flat.detach().cpu().clone() if self.intact() else flatten_state(self.module)

    @torch.no_grad()
    def load(self, flat: Tensor) -> None:
        """Take ``flat`` (P,) as the state (re-allocating the buffer if it was freed)."""
        _check_size(flat, self.flat.numel())
        if not self.owned:  # never write into a buffer others read
            self._point(torch.empty_like(self.flat))
            self.owned, self._before = True, None
        storage = self.flat.untyped_storage()
        if storage.nbytes() < self._nbytes:
            storage.resize_(self._nbytes)
        if not self.intact():
            load_flat_state(self.module, flat)
            return
        self.flat.copy_(flat)

    def free(self) -> None:
        """Drop the buffer's memory and the gradients; the module object stays for the next
        :meth:`load`. A shared buffer is not freed (others read it)."""
        for p in self.module.parameters():
            p.grad = None
        if self.owned and self.intact():
            self.flat.untyped_storage().resize_(0)

    # --- copy-on-write: segments with the same state share one buffer ------------------------
    @torch.no_grad()
    def share(self, buffer: Tensor) -> None:
        """Point the state into ``buffer`` (P,) float32 without copying it. The buffer is then
        read-only to this segment: :meth:`own` copies it before anything writes (training).
        Why: K copies of one averaged state (SplitFed's clients and v1's server copies between
        rounds) cost one buffer instead of K."""
        _check_size(buffer, self.flat.numel())
        if buffer.dtype != torch.float32 or buffer.device != self.flat.device:
            raise ChannelError(
                f"a shared state must be float32 on {self.flat.device}, got {buffer.dtype} on "
                f"{buffer.device}; load() it instead"
            )
        self._point(buffer)
        self.owned, self._before = False, None

    @torch.no_grad()
    def own(self) -> None:
        """A private copy of a shared state (one copy), so that training writes only here."""
        if self.owned:
            return
        before = self.flat
        self._point(before.clone())
        self.owned, self._before = True, before

    def disown(self) -> None:
        """Drop the private state and the gradients: the segment points back into the buffer it
        shared before :meth:`own` (so its values are those of before), or, without one, its
        storage is freed. For a segment whose state was sent away and that is not read again
        before it is given a new one (a SplitFed v1 client after its turn)."""
        before = self._before
        if before is None:
            self.free()
            return
        for p in self.module.parameters():
            p.grad = None
        self._point(before)
        self.owned, self._before = False, None

    def _point(self, buffer: Tensor) -> None:
        offset = 0
        for t in self._tensors:
            n = t.numel()
            t.data = buffer[offset : offset + n].view(t.shape)
            offset += n
        self.flat = buffer


class Spares:
    """The segments a party gave up, kept for the next hand-off without their memory.

    ``factories``: node -> a builder of a fresh segment (the topology's).
    """

    def __init__(self, factories: dict[str, Callable[[], nn.Module]]) -> None:
        self.factories = factories
        self._kept: dict[str, FlatSegment] = {}
        self._meta: dict[str, tuple[nn.Module, torch.device]] = {}
        self._adopted: dict[str, FlatSegment] = {}  # held segments made flat by :meth:`flat`

    def give_up(self, node: str, module: nn.Module) -> None:
        """Keep ``module`` (built by :meth:`take`) with its memory freed."""
        kept = self._kept.get(node)
        if kept is not None and kept.module is module:
            kept.free()
            return
        device = next((t.device for t in module.state_dict().values()), torch.device("cpu"))
        self._meta[node] = (module.to("meta"), device)

    def take(self, node: str) -> nn.Module:
        """The segment of ``node`` to load weights into: the one given up, or a fresh one."""
        kept = self._kept.get(node)
        if kept is not None:
            return kept.module
        if node in self._meta:
            shell, device = self._meta.pop(node)
            return shell.to_empty(device=device)
        module = self.factories[node]()
        flat = FlatSegment.adopt(module)
        if flat is not None:
            self._kept[node] = flat
        return module

    def export(self, node: str, module: nn.Module) -> Tensor:
        """``module``'s state as one flat vector (P,), one copy when it is a flat segment."""
        for known in (self._kept.get(node), self._adopted.get(node)):
            if known is not None and known.module is module:
                return known.export()
        return flatten_state(module)

    def load(self, node: str, module: nn.Module, flat: Tensor) -> None:
        """Copy ``flat`` (P,) into ``module``'s state."""
        kept = self._kept.get(node)
        if kept is not None and kept.module is module:
            kept.load(flat)
        else:
            load_flat_state(module, flat)

    def flat(self, node: str, module: nn.Module) -> FlatSegment | None:
        """``module`` (the held segment of ``node``) as a :class:`FlatSegment`, adopted on the
        first call (None where it cannot be: then it is used as it is)."""
        kept = self._kept.get(node)
        if kept is not None and kept.module is module:
            return kept
        known = self._adopted.get(node)
        if known is None or known.module is not module:
            known = FlatSegment.adopt(module)
            if known is None:
                return None
            self._adopted[node] = known
        return known

    def take_if_kept(self, node: str) -> nn.Module | None:
        """The kept segment of ``node`` as it is (its storage freed), or None."""
        kept = self._kept.get(node)
        return kept.module if kept is not None else None
