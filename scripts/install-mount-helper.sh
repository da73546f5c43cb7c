#!/bin/sh
# Makes the pip-installed rangefs reachable for mount(8), /etc/fstab and systemd.
#
#   sudo scripts/install-mount-helper.sh              install (idempotent)
#   sudo scripts/install-mount-helper.sh --uninstall  remove what it installed
#
# It installs three things and prints one line for each, "installed: PATH" or, when it is
# already there, "already installed: PATH":
#   /usr/local/bin/rangefs      symlink to the console script pip installed; the systemd
#                               units run it from here, and mount.fuse3 finds it on the
#                               default PATH (mount(8) runs helpers without the caller's PATH).
#   /sbin/mount.fuse.rangefs    the helper `mount -t fuse.rangefs` runs (mount(8) tries
#                               mount.fuse.rangefs before falling back to mount.fuse).
#   /sbin/mount.rangefs         the helper `mount -t rangefs` (fstab type rangefs) runs.
#                               Both helpers call /usr/local/bin/rangefs directly, so no
#                               shell PATH or mount.fuse3 is involved.
#
# --uninstall removes only what this script installs: helpers carrying its marker line, and
# a rangefs symlink to a rangefs console script (or to nothing any more). It prints
# "removed: PATH" for each; anything else at those paths is left alone, and said so.
#
# Environment: PYTHON (default python3) is the interpreter rangefs is installed in;
# BINDIR (default /usr/local/bin) and SBINDIR (default /sbin) say where to install.
set -eu

PYTHON=${PYTHON:-python3}
BINDIR=${BINDIR:-/usr/local/bin}
SBINDIR=${SBINDIR:-/sbin}
LINK="$BINDIR/rangefs"
HELPERS="$SBINDIR/mount.fuse.rangefs $SBINDIR/mount.rangefs"
MARKER="installed by rangefs install-mount-helper.sh"

die() {
    echo "install-mount-helper: $*" >&2
    exit 1
}

exists() {
    [ -e "$1" ] || [ -L "$1" ]
}

# A helper is ours if it is a regular file carrying the marker.
is_our_helper() {
    [ -f "$1" ] && [ ! -L "$1" ] && grep -q "$MARKER" "$1"
}

# The link is ours if it is a symlink to a file named rangefs that is a rangefs console
# script, or that is gone (rangefs was pip-uninstalled first).
is_our_link() {
    [ -L "$LINK" ] || return 1
    to=$(readlink "$LINK")
    [ "${to##*/}" = rangefs ] || return 1
    [ ! -e "$LINK" ] || grep -q "from rangefs" "$LINK" 2>/dev/null
}

if [ "${1:-}" = "--uninstall" ]; then
    [ $# -eq 1 ] || die "usage: $0 [--uninstall]"
    for helper in $HELPERS; do
        if is_our_helper "$helper"; then
            rm -f "$helper"
            echo "removed: $helper"
        elif exists "$helper"; then
            echo "left alone: $helper (not installed by this script)"
        else
            echo "not installed: $helper"
        fi
    done
    if is_our_link; then
        rm -f "$LINK"
        echo "removed: $LINK"
    elif exists "$LINK"; then
        echo "left alone: $LINK (not installed by this script)"
    else
        echo "not installed: $LINK"
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

# Refuse before changing anything if a path holds someone else's file.
for helper in $HELPERS; do
    if exists "$helper" && ! is_our_helper "$helper"; then
        die "$helper exists and was not installed by this script; remove it first"
    fi
done
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
    die "$LINK exists and is not a symlink; remove it first"
fi

# 1. /usr/local/bin/rangefs -> the console script.
mkdir -p "$BINDIR" "$SBINDIR"
if [ "$(readlink -f "$LINK" 2>/dev/null || true)" = "$(readlink -f "$target")" ]; then
    echo "already installed: $LINK -> $target"
else
    ln -sfn "$target" "$LINK"
    echo "installed: $LINK -> $target"
fi

# 2. The mount(8) helpers. mount(8) calls them as
#    mount.TYPE SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]
#    without PATH, HOME or SHELL in the environment; the generic options it leaves in -o
#    (rw, _netdev, nofail, x-systemd.*...) rangefs ignores. -N (another mount namespace)
#    is refused.
helper_script() { # NAME TYPE
    cat <<EOF
#!/bin/sh
# mount(8) helper for type $2 ($MARKER).
set -eu
if [ \$# -lt 2 ]; then
    echo "usage: $1 SOURCE MOUNTPOINT [-o OPTIONS]" >&2
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
            echo "$1: -o needs a value" >&2
            exit 1
        fi
        opts="\${opts:+\$opts,}\$2"
        shift 2
        ;;
    -o*) opts="\${opts:+\$opts,}\${1#-o}"; shift ;;
    -t) if [ \$# -ge 2 ]; then shift 2; else shift; fi ;;
    -f) exit 0 ;;
    -n | -s | -v) shift ;;
    *) echo "$1: unsupported argument: \$1" >&2; exit 1 ;;
    esac
done
if [ -n "\$opts" ]; then
    exec "$LINK" mount -o "\$opts" "\$source" "\$mountpoint"
fi
exec "$LINK" mount "\$source" "\$mountpoint"
EOF
}

for helper in $HELPERS; do
    name=${helper##*/}
    tmp="$helper.tmp.$$"
    helper_script "$name" "${name#mount.}" >"$tmp"
    chmod 755 "$tmp"
    if cmp -s "$tmp" "$helper"; then
        rm -f "$tmp"
        echo "already installed: $helper"
    else
        mv -f "$tmp" "$helper"
        echo "installed: $helper"
    fi
done
