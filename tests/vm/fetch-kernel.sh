#!/usr/bin/env bash
# Fetch one Debian kernel image package into a cache directory and leave a
# bootable kernel there, without installing anything on the host.
#
#   fetch-kernel.sh PACKAGE CACHE_DIR
#
# PACKAGE is a Debian binary package name, usually a metapackage such as
# linux-image-amd64 or linux-image-6.12-amd64; it is resolved to the concrete
# linux-image-<abi>-amd64 package it depends on. The result, in CACHE_DIR:
#   kernel     the file to give to qemu -kernel (uncompressed ELF vmlinux when it
#              could be extracted, which boots ~2 s faster under TCG, else vmlinuz)
#   release    the kernel release string (uname -r in the guest)
#   package    "<package>=<version>" that was fetched
# A second call with the same resolved package and version does nothing.
set -euo pipefail

pkg=${1:?usage: fetch-kernel.sh PACKAGE CACHE_DIR}
dir=${2:?usage: fetch-kernel.sh PACKAGE CACHE_DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# Resolve a metapackage to the linux-image-<release> package it pulls in.
resolve() {
    local p=$1 dep
    for _ in 1 2 3 4; do
        dep=$(apt-cache depends "$p" 2>/dev/null |
            awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-/ {print $2; exit}')
        [[ -n $dep ]] || break
        p=$dep
    done
    echo "$p"
}

real=$(resolve "$pkg")
ver=$(apt-cache policy "$real" 2>/dev/null | awk '/Candidate:/{print $2}')
if [[ -z $ver || $ver == "(none)" ]]; then
    if [[ -s $dir/kernel && -f $dir/package ]]; then
        echo "fetch-kernel: apt knows no $real (from $pkg); using the cached $(cat "$dir/package")" >&2
        exit 0
    fi
    echo "fetch-kernel: no candidate for $real (from $pkg): run 'apt-get update'?" >&2
    exit 1
fi
want="$real=$ver"
if [[ -f $dir/package && $(cat "$dir/package") == "$want" && -s $dir/kernel ]]; then
    exit 0
fi

echo "fetch-kernel: $pkg -> $want" >&2
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the cwd; _apt cannot write there, hence the warning
# about an unsandboxed download, which is harmless.
(cd "$tmp" && apt-get download -q "$want" 2>&1 | grep -v 'unsandboxed' >&2) || true
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
[[ -n $deb ]] || { echo "fetch-kernel: download of $want failed" >&2; exit 1; }
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
vmlinuz=$(ls "$tmp"/boot/vmlinuz-* | head -n1)
release=${vmlinuz##*/vmlinuz-}

# Extract the ELF vmlinux from the bzImage, using the payload_offset/length
# fields of the x86 boot protocol (>= 2.08). QEMU boots an ELF vmlinux through
# its PVH entry point (CONFIG_PVH=y in Debian's kernels), skipping the
# decompressor, which is slow under TCG.
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
extract_vmlinux() {
    local img=$1 out=$2 setup off len magic
    [[ $(od -An -c -j $((0x202)) -N4 "$img" | tr -d ' ') == HdrS ]] || return 1
    setup=$(u8 "$img" $((0x1f1)))
    ((setup == 0)) && setup=4
    off=$(u32 "$img" $((0x248)))
    len=$(u32 "$img" $((0x24c)))
    ((off > 0 && len > 4)) || return 1
    local start=$(((setup + 1) * 512 + off))
    magic=$(od -An -tx1 -j "$start" -N4 "$img" | tr -d ' ')
    # The payload ends with the uncompressed size (le32): drop it.
    local payload="tail -c +$((start + 1)) $img | head -c $((len - 4))"
    case $magic in
        fd377a58) eval "$payload" | xz -dc --single-stream >"$out" ;;
        28b52ffd) eval "$payload" | zstd -dcq >"$out" ;;
        1f8b08*) eval "$payload" | gzip -dc >"$out" ;;
        *) return 1 ;;
    esac
    [[ $(od -An -c -N4 "$out" | tr -d ' ') == 177ELF ]]
}

rm -f "$dir/kernel" "$dir/package"
if command -v xz >/dev/null && command -v zstd >/dev/null &&
    extract_vmlinux "$vmlinuz" "$tmp/vmlinux" 2>/dev/null; then
    mv "$tmp/vmlinux" "$dir/kernel"
else
    echo "fetch-kernel: could not extract vmlinux, booting the compressed image" >&2
    mv "$vmlinuz" "$dir/kernel"
fi
echo "$release" >"$dir/release"
echo "$want" >"$dir/package"
