"""The filesystem the kernel sees: the thin pyfuse3 adapter, the FUSE-free core it calls,
inodes, the namespace (keys and prefixes as files and directories), xattrs, and what follows
a reader across files (walks, pins).
"""
