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


class Transient(RemoteError):
    """One failed attempt worth another (network trouble, 5xx, throttling, a short body).

    ``cause`` is a short label for metrics: ``http_503``, ``timeout``, ``connection``, ...
    The retry policy (:mod:`rangefs.remote.retry`) consumes it; callers see :class:`RemoteError`.
    """

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class NoAnswer(Transient):
    """One attempt that got no answer from S3 at all: connection refused or reset before a
    response, a DNS failure, a connect or read timeout. Retried like any :class:`Transient`;
    when the retries are spent the store raises :class:`Unreachable`."""


class Unreachable(RemoteError):
    """S3 could not be reached, after the retries or, while the mount is offline, without
    trying (:mod:`rangefs.remote.reachability`). Unlike any answer from S3 (404, 403,
    412, 5xx), this takes the mount offline: what the cache holds is served, the rest
    fails fast with EIO."""


class BadResponse(RemoteError):
    """The server answered something other than what was asked (status, range, length)."""


class ProofFailed(RemoteError):
    """The bytes of an object version failed S3's proof (its ETag), or bytes already
    returned to this reader were found wrong by it: EIO rather than wrong bytes."""


class CacheWriteFailed(RangefsError):
    """The cache disk refused bytes as they arrived (full, failing): the reader falls back
    to filling chunks in memory, so a reader never sees it."""


class NotADirectory(RangefsError):
    errno = errno.ENOTDIR


class IsADirectory(RangefsError):
    errno = errno.EISDIR


class ReadOnly(RangefsError):
    errno = errno.EROFS


class NoSuchAttribute(RangefsError):
    errno = errno.ENODATA


class NotOnMount(RangefsError):
    """A path given to a client command is not on a rangefs mount (no rangefs xattrs)."""

    errno = errno.ENODATA


class UserError(Exception):
    """What the user must hear about, as one line with no traceback: an operation that could
    not be done (a mount, a prefetch). The CLI alone picks the exit status (1)."""


class UsageError(UserError):
    """Bad usage: an unknown or invalid option, source or value (exit status 2)."""
