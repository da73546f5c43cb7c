"""The core tier: Filesystem, ChunkReader and the pyfuse3 adapter over an in-memory store."""
