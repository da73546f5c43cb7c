"""Domain exceptions, each carrying the errno a FUSE caller sees.

The FUSE adapter converts these (and only these) into ``FUSEError``; anything else is a bug
and becomes EIO there. The CLI turns :class:`UserError` into a one-line message and an exit
status.
"""

import errno


class RangefsError(Exception):
    """Base class: ``errno`` is what a filesystem caller gets."""

    errno: int = errno.EIO


class NotFound(RangefsError):
    errno = errno.ENOENT


class AccessDenied(RangefsError):
    errno = errno.EACCES


class ObjectChanged(RangefsError):
    """The object's ETag is no longer the one the file was opened with (HTTP 412)."""

    errno = errno.ESTALE


class RemoteError(RangefsError):
    """A network or server failure that persisted after the retry budget."""

    errno = errno.EIO


class BadResponse(RemoteError):
    """The server answered something other than what was asked (status, range, length)."""


class NotADirectory(RangefsError):
    errno = errno.ENOTDIR


class IsADirectory(RangefsError):
    errno = errno.EISDIR


class ReadOnly(RangefsError):
    errno = errno.EROFS


class NoSuchAttribute(RangefsError):
    errno = errno.ENODATA


class UserError(Exception):
    """Bad input from the user: printed as one line, no traceback, non-zero exit."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
