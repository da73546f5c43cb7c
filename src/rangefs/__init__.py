"""rangefs: mount an S3 bucket read-only; every read is a chunk-aligned Range GET kept in a
resumable, checksummed on-disk cache."""

__version__ = "0.1.0"
