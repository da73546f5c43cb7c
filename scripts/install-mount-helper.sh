#!/bin/sh
# Makes the pip-installed rangefs reachable for mount(8), /etc/fstab and systemd.
#
#   sudo scripts/install-mount-helper.sh              install (idempotent)
#   sudo scripts/install-mount-helper.sh --uninstall  remove what it installed
#
# It installs two things:
#   /usr/local/bin/rangefs      symlink to the console script pip installed; the systemd
#                               units run it from here, and mount.fuse3 finds it on the
#                               default PATH (mount(8) runs helpers without the caller's PATH).
#   /sbin/mount.fuse.rangefs    the helper `mount -t fuse.rangefs` runs (mount(8) tries
#                               mount.fuse.rangefs before falling back to mount.fuse); it
#                               calls /usr/local/bin/rangefs directly, so no shell, PATH or
#                               mount.fuse3 is involved.
#
# Environment: PYTHON (default python3) is the interpreter rangefs is installed in;
# BINDIR (default /usr/local/bin) and SBINDIR (default /sbin) say where to install.
set -eu

PYTHON=${PYTHON:-python3}
BINDIR=${BINDIR:-/usr/local/bin}
SBINDIR=${SBINDIR:-/sbin}
LINK="$BINDIR/rangefs"
HELPER="$SBINDIR/mount.fuse.rangefs"
MARKER="installed by rangefs install-mount-helper.sh"

die() {
    echo "install-mount-helper: $*" >&2
    exit 1
}

is_ours() {
    [ -f "$HELPER" ] && grep -q "$MARKER" "$HELPER"
}

if [ "${1:-}" = "--uninstall" ]; then
    if is_ours; then
        rm -f "$HELPER" && echo "removed $HELPER"
    fi
    if [ -L "$LINK" ]; then
        rm -f "$LINK" && echo "removed $LINK"
    fi
    exit 0
elif [ $# -gt 0 ]; then
    die "usage: $0 [--uninstall]"
fi

[ "$(id -u)" = 0 ] || die "run as root (it writes to $BINDIR and $SBINDIR)"

scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))') ||
    die "cannot run $PYTHON; set PYTHON=/path/to/the/python rangefs is installed in"
target="$scripts/rangefs"
[ -x "$target" ] ||
    die "$target not found: pip install rangefs into $PYTHON first (or set PYTHON=...)"
"$target" --version >/dev/null 2>&1 || die "$target --version fails: is rangefs installed?"

# 1. /usr/local/bin/rangefs -> the console script.
mkdir -p "$BINDIR" "$SBINDIR"
if [ "$(readlink -f "$LINK" 2>/dev/null || true)" = "$(readlink -f "$target")" ]; then
    echo "ok: $LINK -> $target"
elif [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
    die "$LINK exists and is not a symlink; remove it first"
else
    ln -sfn "$target" "$LINK"
    echo "installed: $LINK -> $target"
fi

# 2. /sbin/mount.fuse.rangefs. mount(8) calls it as
#    mount.fuse.rangefs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]
#    with the mount(8)-only options (x-*, dev, suid, exec...) already removed, and without
#    PATH, HOME or SHELL in the environment. -N (another mount namespace) is refused.
tmp="$HELPER.tmp.$$"
cat >"$tmp" <<EOF
#!/bin/sh
# mount(8) helper for type fuse.rangefs ($MARKER).
set -eu
if [ \$# -lt 2 ]; then
    echo "usage: mount.fuse.rangefs SOURCE MOUNTPOINT [-o OPTIONS]" >&2
    exit 1
fi
source=\$1
mountpoint=\$2
shift 2
opts=
while [ \$# -gt 0 ]; do
    case \$1 in
    -o)
        if [ \$# -lt 2 ]; then
            echo "mount.fuse.rangefs: -o needs a value" >&2
            exit 1
        fi
        opts="\${opts:+\$opts,}\$2"
        shift 2
        ;;
    -o*) opts="\${opts:+\$opts,}\${1#-o}"; shift ;;
    -t) if [ \$# -ge 2 ]; then shift 2; else shift; fi ;;
    -f) exit 0 ;;
    -n | -s | -v) shift ;;
    *) echo "mount.fuse.rangefs: unsupported argument: \$1" >&2; exit 1 ;;
    esac
done
if [ -n "\$opts" ]; then
    exec "$LINK" mount -o "\$opts" "\$source" "\$mountpoint"
fi
exec "$LINK" mount "\$source" "\$mountpoint"
EOF
chmod 755 "$tmp"
if [ -f "$HELPER" ] && cmp -s "$tmp" "$HELPER"; then
    rm -f "$tmp"
    echo "ok: $HELPER"
elif [ -e "$HELPER" ] && ! is_ours; then
    rm -f "$tmp"
    die "$HELPER exists and was not installed by this script; remove it first"
else
    mv -f "$tmp" "$HELPER"
    echo "installed: $HELPER"
fi
