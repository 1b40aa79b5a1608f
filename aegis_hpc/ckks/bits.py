"""Integer helpers shared by the slot, row and bucket sizes of every layer."""


def pow2_at_least(n: int) -> int:
    """The power of two at or above n (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()
