#!/usr/bin/env bash
# Fetch one Debian kernel image package into a cache directory and leave a
# bootable kernel there, without installing anything on the host.
#
#   fetch-kernel.sh PACKAGE[/SUITE] CACHE_DIR
#
# PACKAGE is a Debian binary package name, usually a metapackage such as
# linux-image-amd64 or linux-image-6.12-amd64; it is resolved to the concrete
# linux-image-<release> package it depends on, and on to the linux-binary-<release>
# package that holds the kernel where the image package is only a wrapper (sid:
# /usr/lib/modules/<release>/vmlinuz instead of /boot/vmlinuz-<release>).
# Without /SUITE the host's own apt sources and lists are used (the kernels of the
# host's release). With /SUITE (bullseye, sid, ...) a private apt configuration in
# CACHE_DIR/../.apt/SUITE is used: its own sources.list naming SUITE (and
# SUITE-security, except for sid/unstable/experimental) on the host's Debian mirror
# (the URI its sources give for its own release; TCPTOP_VM_MIRROR and
# TCPTOP_VM_SECURITY_MIRROR override), its own lists and an empty dpkg status; it is
# refreshed with apt-get update when older than TCPTOP_VM_APT_MAX_AGE minutes
# (default 720), when its sources changed, or after an update that failed. The
# host's sources, lists, pins and packages are never touched. If apt has no
# candidate or the download fails, a kernel already in CACHE_DIR is kept.
# The result, in CACHE_DIR:
#   kernel     the file to give to qemu -kernel (uncompressed ELF vmlinux when it
#              could be extracted, which boots ~2 s faster under TCG, else vmlinuz)
#   release    the kernel release string (uname -r in the guest)
#   package    "<package>=<version>" that was fetched
# A second call with the same resolved package and version does nothing.
set -euo pipefail

spec=${1:?usage: fetch-kernel.sh PACKAGE[/SUITE] CACHE_DIR}
dir=${2:?usage: fetch-kernel.sh PACKAGE[/SUITE] CACHE_DIR}
pkg=${spec%%/*}
suite=
[[ $spec == */* ]] && suite=${spec#*/}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# apt options of the private configuration for $suite (none: the host's)
apt_opts=()

# The URI of the host's apt source for SUITE (deb822 .sources or one-line .list)
host_uri_for() {
    local want=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        if [[ $f == *.sources ]]; then
            # deb822 stanzas: a URIs: and a Suites: field each, blank-line separated
            awk -v want="$want" '
                /^[ \t]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
                tolower($1) == "uris:" { uri = $2 }
                tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }
                END { if (uri != "" && hit) print uri }' "$f"
        else
            # deb [options] URI SUITE COMPONENT...
            awk -v want="$want" '$1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == want) print $i
                }' "$f"
        fi
    done | awk 'NR == 1' # (not head: pipefail would see the writer's SIGPIPE)
}

# Write and refresh the private apt configuration for $suite.
setup_suite() {
    local a codename mirror security keyring opt max_age=${TCPTOP_VM_APT_MAX_AGE:-720}
    a=$(cd "$dir/.." && pwd)/.apt/$suite
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/empty"
    : >>"$a/status"
    # the host's mirror: the URI it uses for its own release (e.g. bookworm)
    codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-bookworm}")
    mirror=${TCPTOP_VM_MIRROR:-$(host_uri_for "$codename")}
    mirror=${mirror:-http://deb.debian.org/debian}
    mirror=${mirror%/}
    security=${TCPTOP_VM_SECURITY_MIRROR:-$(host_uri_for "$codename-security")}
    security=${security:-${mirror%/debian}/debian-security}
    security=${security%/}
    opt=
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r $keyring ]] && opt="[signed-by=$keyring] "
    {
        echo "# written by tests/vm/fetch-kernel.sh; private to the kernel matrix"
        echo "deb ${opt}$mirror $suite main"
        case $suite in
            sid | unstable | experimental) ;;
            *) echo "deb ${opt}$security $suite-security main" ;;
        esac
    } >"$a/sources.list.new"
    apt_opts=(
        -o "Dir::Etc::SourceList=$a/sources.list" -o "Dir::Etc::SourceParts=$a/empty"
        -o "Dir::Etc::Preferences=$a/empty/none" -o "Dir::Etc::PreferencesParts=$a/empty"
        -o "Dir::State=$a" -o "Dir::State::Lists=$a/lists" -o "Dir::State::status=$a/status"
        -o "Dir::Cache=$a/cache" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "APT::Sandbox::User=root" -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    )
    # refresh when the sources changed, or the lists are missing or old
    if ! cmp -s "$a/sources.list.new" "$a/sources.list" || [[ ! -f $a/updated ]] ||
        [[ -n $(find "$a/updated" -mmin +"$max_age" 2>/dev/null) ]]; then
        mv "$a/sources.list.new" "$a/sources.list"
        echo "fetch-kernel: apt-get update for $suite ($(grep -c '^deb ' "$a/sources.list") source(s), $mirror)" >&2
        # (apt-get update exits 0 when an index failed to download, saying so with W:)
        if apt-get "${apt_opts[@]}" -q update >"$a/update.log" 2>&1 &&
            ! grep -qE '^(E:|W: (Failed to fetch|Some index files))' "$a/update.log"; then
            touch "$a/updated"
        else
            grep -E '^[WE]:' "$a/update.log" | tail -n5 >&2 || true
            echo "fetch-kernel: apt-get update for $suite failed; using the lists there are" >&2
        fi
    else
        rm -f "$a/sources.list.new"
    fi
}
[[ -n $suite ]] && setup_suite

# Resolve a metapackage to the linux-image-<release> package it pulls in, and a
# linux-image-<release> that is only a wrapper to its linux-binary-<release>.
resolve() {
    local p=$1 dep
    for _ in 1 2 3 4 5; do
        dep=$(apt-cache "${apt_opts[@]}" depends "$p" 2>/dev/null |
            awk '!dep && $1 ~ /Depends:$/ && $2 ~ /^linux-(image|binary)-/ {dep = $2} END {print dep}')
        [[ -n $dep ]] || break
        p=$dep
    done
    echo "$p"
}

real=$(resolve "$pkg")
ver=$(apt-cache "${apt_opts[@]}" policy "$real" 2>/dev/null | awk '/Candidate:/{print $2}')
if [[ -z $ver || $ver == "(none)" ]]; then
    if [[ -s $dir/kernel && -f $dir/package ]]; then
        echo "fetch-kernel: apt knows no $real (from $spec); using the cached $(cat "$dir/package")" >&2
        exit 0
    fi
    echo "fetch-kernel: no candidate for $real (from $spec): run 'apt-get update'?" >&2
    exit 1
fi
want="$real=$ver"
if [[ -f $dir/package && $(cat "$dir/package") == "$want" && -s $dir/kernel && -d $dir/modules ]]; then
    exit 0
fi

echo "fetch-kernel: $pkg -> $want" >&2
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the cwd; _apt cannot write there, hence the warning
# about an unsandboxed download, which is harmless.
(cd "$tmp" && apt-get "${apt_opts[@]}" download -q "$want" 2>&1 | grep -v 'unsandboxed' >&2) || true
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
if [[ -z $deb ]]; then
    if [[ -s $dir/kernel && -f $dir/package ]]; then
        echo "fetch-kernel: download of $want failed; using the cached $(cat "$dir/package")" >&2
        exit 0
    fi
    echo "fetch-kernel: download of $want failed" >&2
    exit 1
fi
# the kernel image: ./boot/vmlinuz-<release> (linux-image-*), or
# ./usr/lib/modules/<release>/vmlinuz (linux-binary-*, sid)
member=$(dpkg-deb --fsys-tarfile "$deb" | tar -t |
    awk '!found && /^\.\/(boot\/vmlinuz-[^\/]+|(usr\/)?lib\/modules\/[^\/]+\/vmlinuz)$/ {print; found = 1}')
[[ -n $member ]] || { echo "fetch-kernel: no vmlinuz in ${deb##*/}" >&2; exit 1; }
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "$member"
vmlinuz=$tmp/${member#./}
if [[ $member == ./boot/vmlinuz-* ]]; then
    release=${member##*/vmlinuz-}
else
    release=${member%/vmlinuz}
    release=${release##*/}
fi

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
    # (tail may die of SIGPIPE when head has its bytes: not a failure under pipefail)
    local payload="{ tail -c +$((start + 1)) $img || true; } | head -c $((len - 4))"
    case $magic in
        fd377a58) eval "$payload" | xz -dc --single-stream >"$out" ;;
        28b52ffd) eval "$payload" | zstd -dcq >"$out" ;;
        1f8b08*) eval "$payload" | gzip -dc >"$out" ;;
        *) return 1 ;;
    esac
    [[ $(od -An -c -N4 "$out" | tr -d ' ') == 177ELF ]]
}

# The sock_diag modules (Debian builds them as modules, and the guest loads none by itself),
# decompressed for busybox's insmod; sid keeps them in linux-modules-<release>.
diag_modules() {
    local deb=$1 module name
    dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -E '/kernel/net/ipv4/(inet|tcp)_diag\.ko(\.xz|\.zst)?$' |
        while read -r module; do
            dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "$module"
            name=${module##*/}
            case $name in
                *.xz) xz -dc "$tmp/${module#./}" >"$dir/modules/${name%.xz}" ;;
                *.zst) zstd -dcq "$tmp/${module#./}" >"$dir/modules/${name%.zst}" ;;
                *) cp "$tmp/${module#./}" "$dir/modules/$name" ;;
            esac
        done || true
}
rm -rf "$dir/modules"
mkdir -p "$dir/modules"
diag_modules "$deb"
if [[ -z $(ls "$dir/modules") && $real == linux-binary-* ]]; then
    (cd "$tmp" && apt-get "${apt_opts[@]}" download -q "linux-modules-$release=$ver" 2>&1 | grep -v 'unsandboxed' >&2) || true
    for modules_deb in "$tmp"/linux-modules-*.deb; do
        [[ -f $modules_deb ]] && diag_modules "$modules_deb"
    done
fi
[[ -n $(ls "$dir/modules") ]] || echo "fetch-kernel: no sock_diag modules for $release: its sockdiag tests will fail" >&2

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
