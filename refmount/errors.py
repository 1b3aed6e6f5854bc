"""Errors meant for the user: one line that names the thing and the problem."""


class RefmountError(Exception):
    """A user-facing failure (bad input, unreachable origin, unusable mountpoint).

    The CLI prints ``refmount: <message>`` and exits non-zero; never a traceback.
    """


class FetchError(OSError):
    """Bytes for a reference could not be fetched exactly (reported to readers as EIO)."""


class ShortRead(FetchError):
    """The original ends before the range a reference names: that range's fault alone (its
    neighbours in a merged request are fine), and asking again will not help."""
