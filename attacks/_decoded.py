"""What a white-box attacker matches on a compressed cut: the decode of its guess, not its guess.

On a run with ``--compress forward=...`` the receiver (and so the recorded activation ``z``)
holds ``C(f(x))``, the client's message after the compressor's encode and decode, not ``f(x)``.
Inverting ``||f(x) - z||^2`` then asks for an input whose *exact* activation is the decoded one:
top-k's dropped coordinates must be 0, quantised values exact. The compressor is public (the
run's configuration, Kerckhoffs), so the attacker differentiates through it instead: the
residual :func:`decoded_residual` returns, per element, is

- ``topk``, ``int8``, ``int4``, ``fp16``, ``bf16``: ``STE(C(y)) - z`` with ``STE(C(y)) = y +
  (C(y) - y).detach()``: the guess ``y = f(x)`` compressed as the client would (top-k of its own
  row, quantised on its own row's grid) and compared with what was received; the gradient goes
  straight through the rounding and selection. A top-k coordinate that was not sent and that the
  guess does not send either costs nothing, one the guess sends but the client did not is pulled
  to 0, and a quantised value anywhere in its own step matches exactly (the dead zone of
  ``scale / 2`` that the value was known within);
- ``randk``: ``(y - z) * [z != 0]``: the coordinates were drawn at random, so only the ones
  received (non-zero) say anything about ``f(x)``; the others are left free. A coordinate that
  was sent with the value 0 (common after a ReLU) is taken for one not sent, since the recorded
  message keeps the decoded tensor, not the mask: the attacker ignores a true constraint, so its
  leak stays a lower bound, if a looser one.

Error feedback (top-k's default) moves only training messages; the inference messages the
white-box attack inverts are compressed without it, which is what :func:`decoded_residual`
simulates.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from nopeek.compress import Compressor

Residual = Callable[[Tensor, Tensor], Tensor]


def plain_residual(y: Tensor, z: Tensor) -> Tensor:
    """``y - z``: the guess's activation against the received one, as if nothing compressed.

    >>> import torch
    >>> plain_residual(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]))
    tensor([0., 2.])
    """
    return y - z


def decoded_residual(codec: Compressor | None) -> Residual:
    """The per-element residual ``(y (N, ...), z (N, ...)) -> (N, ...)`` of a guess ``y`` against
    a message ``z`` received through ``codec`` (None: uncompressed, :func:`plain_residual`).

    >>> import torch
    >>> from nopeek.compress import parse_compressor
    >>> r = decoded_residual(parse_compressor("topk:0.5"))
    >>> z = torch.tensor([[0.0, -4.0, 2.0, 0.0]])  # what crossed: two of four sent
    >>> r(torch.tensor([[0.3, -4.0, 2.0, -0.1]]), z)  # small unsent coordinates cost nothing
    tensor([[0., 0., 0., 0.]])
    >>> r(torch.tensor([[3.0, -4.0, 2.0, 0.0]]), z)  # one the client did not send
    tensor([[ 3.,  0., -2.,  0.]])
    """
    if codec is None:
        return plain_residual
    if codec.name == "randk":
        return lambda y, z: (y - z) * (z != 0)

    def through(y: Tensor, z: Tensor) -> Tensor:
        sent = codec.roundtrip(y.detach()).to(y.dtype)
        return y + (sent - y).detach() - z

    return through
