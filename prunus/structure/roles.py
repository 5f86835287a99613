"""What a slice of a tensor does for its channel group: one `Role` enum and the role sets built from it.

Every `Slice` of a `ChannelGroup` has one role. Masks, criteria, merging, C-SGD and the one-shot
pruner each need a subset of the roles (which tensors compute the channel, which a mask zeroes,
which belong to the consumers); they take it from here instead of spelling string tuples.

`Role` is a `str` enum, so `slice.role == "bn_weight"` and JSON keep working.

Example:
    >>> Role.BN_WEIGHT == "bn_weight", Role("dw").is_writer
    (True, True)
    >>> [r.value for r in WRITER_ROLES]
    ['out', 'dw']
    >>> Role.IN.is_masked, Role.BIAS.is_masked
    (False, True)
"""

from __future__ import annotations

from enum import Enum

__all__ = ["CLUSTERED_ROLES", "CONSUMER_ROLES", "MASKED_ROLES", "ROLES", "VECTOR_ROLES", "WRITER_ROLES", "Role"]


class Role(str, Enum):
    """The role of a tensor slice in a coupled channel group."""

    OUT = "out"
    BIAS = "bias"
    DW = "dw"
    DW_BIAS = "dw_bias"
    BN_WEIGHT = "bn_weight"
    BN_BIAS = "bn_bias"
    BN_MEAN = "bn_mean"
    BN_VAR = "bn_var"
    PRELU = "prelu"
    IN = "in"
    IN_GROUPED = "in_grouped"
    PARAM = "param"

    def __str__(self) -> str:  # "out", not "Role.OUT", in messages and f-strings
        return self.value

    @property
    def description(self) -> str:
        """One line saying which positions of which tensor the role covers."""
        return _DESCRIPTIONS[self]

    @property
    def is_writer(self) -> bool:
        """Weight rows that compute the channel: a conv/linear's output rows or a depthwise conv's rows."""
        return self in (Role.OUT, Role.DW)

    @property
    def is_masked(self) -> bool:
        """Set to zero by a mask; consumer inputs and running stats are left alone (they see zeros)."""
        # a bare per-channel parameter may be additive (a channel bias): zero it, or the masked
        # channel would still emit it
        return self in (Role.OUT, Role.BIAS, Role.DW, Role.DW_BIAS, Role.BN_WEIGHT, Role.BN_BIAS, Role.PARAM)

    @property
    def is_vector(self) -> bool:
        """One learned scalar per channel (BN affine, PReLU slope): no weight decay in C-SGD."""
        return self in (Role.BN_WEIGHT, Role.BN_BIAS, Role.PRELU)

    @property
    def is_clustered(self) -> bool:
        """Pulled together by C-SGD: every learned per-channel tensor on the writing side."""
        return self.is_masked or self is Role.PRELU

    @property
    def is_consumer(self) -> bool:
        """Input positions of a layer that reads the channels."""
        return self in (Role.IN, Role.IN_GROUPED)


_DESCRIPTIONS = {
    Role.OUT: "output rows (dim 0; dim 1 of a ConvTranspose) of a conv/linear writing the channels",
    Role.BIAS: "bias entries of such a writer",
    Role.DW: "rows of a depthwise conv the channels pass through",
    Role.DW_BIAS: "bias entries of that depthwise conv",
    Role.BN_WEIGHT: "BatchNorm gamma",
    Role.BN_BIAS: "BatchNorm beta",
    Role.BN_MEAN: "BatchNorm running mean",
    Role.BN_VAR: "BatchNorm running variance",
    Role.PRELU: "per-channel PReLU slopes",
    Role.IN: "input columns (dim 1) of a consumer conv/linear; a Linear after flatten has a block per channel",
    Role.IN_GROUPED: "input channels of a grouped conv (weight columns index channel % (in/groups))",
    Role.PARAM: "a bare per-channel nn.Parameter of a user module (layer scale, channel bias), along its channel dim",
}

#: every role -> its description (kept from the string table this enum replaced)
ROLES: dict[Role, str] = {r: r.description for r in Role}
WRITER_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.is_writer)
MASKED_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.is_masked)
VECTOR_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.is_vector)
CLUSTERED_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.is_clustered)
CONSUMER_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.is_consumer)
