#!/usr/bin/env bash
# Build the test initramfs (an uncompressed newc cpio).
#
#   mkinitramfs.sh OUT.cpio PAYLOAD_SH CWD [FILE...]
#
# PAYLOAD_SH  shell script run by /init as the test (becomes /payload.sh)
# CWD         directory the payload starts in (created in the guest)
# FILE...     host files (executables or data) copied to the SAME absolute path
#             in the guest; for ELF files, the shared libraries that ldd names
#             and the dynamic loader come along. Debug info is stripped from the
#             copies to keep the image small.
# Needs: busybox-static (/bin/busybox, statically linked), cpio.
set -euo pipefail

out=${1:?usage: mkinitramfs.sh OUT.cpio PAYLOAD_SH CWD [FILE...]}
payload=${2:?}
cwd=${3:?}
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

busybox=/bin/busybox
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
    echo "mkinitramfs: $busybox is not static: apt-get install busybox-static" >&2
    exit 1
fi
command -v cpio >/dev/null || { echo "mkinitramfs: apt-get install cpio" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/tcptop-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib64}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] && continue
    ln -sf busybox "$root/bin/$applet"
done
cp "$here/init" "$root/init"
chmod 755 "$root/init"
cp "$payload" "$root/payload.sh"
printf 'PAYLOAD_CWD=%q\n' "$cwd" >"$root/payload.env"
mkdir -p "$root$cwd"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
echo 'hosts: files' >"$root/etc/nsswitch.conf"

# copy SRC to the same path under $root (following symlinks for the content)
put() {
    local src=$1 dst=$root$1
    [[ -e $dst ]] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
    if file -L "$src" | grep -q 'ELF.*not stripped\|ELF.*with debug_info'; then
        objcopy --strip-debug "$dst" 2>/dev/null || cp -L "$src" "$dst"
    fi
}

for f in "$@"; do
    [[ $f == /* ]] || f=$(realpath "$f")
    put "$f"
    if file -L "$f" | grep -q 'ELF.*dynamically linked'; then
        # ldd lines: "libx.so.1 => /lib/.../libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        while read -r lib; do
            put "$lib"
        done < <(ldd "$f" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}')
    fi
done

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
