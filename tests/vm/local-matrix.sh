#!/usr/bin/env bash
# tcptop kernel matrix: run the root BPF tests (`bpf::` in tests/integration.rs)
# once per attach strategy on the host kernel and on Debian's stock kernels
# booted under QEMU (TCG). See tests/vm/README.md.
#
#   tests/vm/run-matrix.sh [--kernels host,6.1,6.12] [--strategies auto,fentry,kprobe,tracepoint]
#                          [--payload CMD] [--include FILE]... [--no-build] [--timeout SECS]
#                          [--jobs N] [--smp N] [--out DIR] [--host-unsupported LIST]
set -euo pipefail

# ---------------------------------------------------------------------------
# The kernel table: one line per kernel, "NAME  DEBIAN-PACKAGE  UNSUPPORTED".
# The package is fetched with apt-get download (a metapackage is resolved to the
# concrete linux-image-<release> it depends on) and never installed. UNSUPPORTED
# lists the strategies that kernel refuses ("-" for none): the tests get it as
# TCPTOP_EXPECT_UNSUPPORTED and then assert tcptop's clear error instead.
# The name "host" is the running kernel: the tests run directly on this machine
# (its column is this workplace's sandbox, where fentry and kprobes are blocked;
# override with --host-unsupported, e.g. "-" on a machine where all attach).
KERNEL_TABLE='
host  -                       fentry,kprobe
6.1   linux-image-amd64       tracepoint
6.12  linux-image-6.12-amd64  -
5.10  nonexistent-5.10  tracepoint
sid  nonexistent-sid  -
'
STRATEGIES_ALL='auto fentry kprobe tracepoint'
# ---------------------------------------------------------------------------

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=$target_dir/vm-matrix
cache=$target_dir/vm-kernels

kernels=$(awk 'NF && $1 !~ /^#/ {print $1}' <<<"$KERNEL_TABLE" | paste -sd,)
strategies=${STRATEGIES_ALL// /,}
payload_cmd=
build=1
vm_timeout=300
jobs=2
smp=2
includes=()
host_unsupported=

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF

  --kernels LIST      comma-separated names from the table (default: $kernels)
  --strategies LIST   TCPTOP_PROBE values to run (default: $strategies)
  --payload CMD       shell command to run instead of the BPF tests (development);
                      it sees TCPTOP_PROBE, TCPTOP_EXPECT_UNSUPPORTED and TCPTOP_REQUIRE_BPF=1
  --include FILE      also copy FILE (and its shared libraries) into the guest
  --no-build          do not run cargo; reuse the binaries of the last build
  --timeout SECS      kill a VM run after SECS (default: $vm_timeout)
  --jobs N            VMs run at once (default: $jobs)
  --smp N             vCPUs per VM (default: $smp)
  --out DIR           logs and initramfs (default: target/vm-matrix)
  --host-unsupported LIST  strategies the host kernel refuses ("-": none;
                      default: the table's, $(awk '$1 == "host" {print $3}' <<<"$KERNEL_TABLE"))
EOF
}

while (($#)); do
    case $1 in
        --kernels) kernels=$2; shift 2 ;;
        --kernels=*) kernels=${1#*=}; shift ;;
        --strategies) strategies=$2; shift 2 ;;
        --strategies=*) strategies=${1#*=}; shift ;;
        --payload) payload_cmd=$2; shift 2 ;;
        --payload=*) payload_cmd=${1#*=}; shift ;;
        --include) includes+=("$2"); shift 2 ;;
        --include=*) includes+=("${1#*=}"); shift ;;
        --no-build) build=0; shift ;;
        --timeout) vm_timeout=$2; shift 2 ;;
        --timeout=*) vm_timeout=${1#*=}; shift ;;
        --jobs|-j) jobs=$2; shift 2 ;;
        --jobs=*) jobs=${1#*=}; shift ;;
        --smp) smp=$2; shift 2 ;;
        --smp=*) smp=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --host-unsupported) host_unsupported=$2; shift 2 ;;
        --host-unsupported=*) host_unsupported=${1#*=}; shift ;;
        --out=*) out=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-matrix: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
IFS=, read -r -a kernel_list <<<"$kernels"
IFS=, read -r -a strategy_list <<<"$strategies"
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
# one matrix at a time per output directory: a second run waits for the first
exec 9>"$out/.lock"
if ! flock -n 9; then
    echo "run-matrix: another matrix is using $out; waiting for it (or use --out)" >&2
    flock 9
fi
rm -f "$out"/logs/*.log "$out"/logs/*.result

log() { printf '[run-matrix %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
t_start=$SECONDS

package_of() {
    awk -v n="$1" 'NF && $1 == n {print $2; found = 1} END {exit !found}' <<<"$KERNEL_TABLE"
}
# the kernel's refused strategies, comma-separated, "" for none
unsupported_of() {
    local u
    if [[ $1 == host && -n $host_unsupported ]]; then
        u=$host_unsupported
    else
        u=$(awk -v n="$1" 'NF && $1 == n {print $3}' <<<"$KERNEL_TABLE")
    fi
    [[ $u == - ]] && u=
    echo "$u"
}
is_unsupported() { [[ ",$(unsupported_of "$1")," == *",$2,"* ]]; }
for k in "${kernel_list[@]}"; do
    package_of "$k" >/dev/null || { echo "run-matrix: kernel '$k' is not in the table" >&2; exit 2; }
done
for s in "${strategy_list[@]}"; do
    [[ " $STRATEGIES_ALL " == *" $s "* ]] || { echo "run-matrix: unknown strategy '$s'" >&2; exit 2; }
done

need_vm=0
for k in "${kernel_list[@]}"; do [[ $k == host ]] || need_vm=1; done
if ((need_vm)); then
    missing=
    for c in qemu-system-x86_64 cpio apt-get dpkg-deb xz zstd objcopy file timeout; do
        command -v "$c" >/dev/null || missing+=" $c"
    done
    [[ -x /bin/busybox ]] || missing+=" busybox(-static)"
    if [[ -n $missing ]]; then
        echo "run-matrix: missing:$missing; see tests/vm/README.md for the apt-get line" >&2
        exit 2
    fi
fi

# --- 1. test binaries ------------------------------------------------------
# binaries.env records the integration test binary and target/debug/tcptop of
# the last build, for --no-build.
bins=$out/binaries.env
test_bin=
tcptop_bin=
if ((build)); then
    log "cargo test --no-run --test integration (this may wait for the cargo lock)"
    json=$out/cargo-build.json
    if ! (cd "$repo" && cargo test --no-run --test integration --message-format=json-render-diagnostics >"$json"); then
        if [[ -n $payload_cmd ]]; then
            log "cargo build failed; going on with --payload only"
        else
            echo "run-matrix: cargo test --no-run failed" >&2
            exit 1
        fi
    fi
    python3 - "$json" >"$bins.tmp" <<'EOF'
import json, sys
test = tcptop = ""
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == "integration" and "test" in t["kind"]:
        test = m["executable"]
    elif t["name"] == "tcptop" and "bin" in t["kind"] and not m["profile"]["test"]:
        tcptop = m["executable"]
print(f"test_bin={test!r}")
print(f"tcptop_bin={tcptop!r}")
EOF
    mv "$bins.tmp" "$bins"
fi
if [[ -f $bins ]]; then
    # shellcheck disable=SC1090
    . "$bins"
fi
if [[ -z $payload_cmd ]]; then
    if [[ -z $test_bin || ! -x $test_bin ]]; then
        echo "run-matrix: no integration test binary (tests/integration.rs); build without --no-build, or use --payload" >&2
        exit 1
    fi
    [[ -n $tcptop_bin && -x $tcptop_bin ]] || tcptop_bin=$target_dir/debug/tcptop
    [[ -x $tcptop_bin ]] || { echo "run-matrix: no $tcptop_bin" >&2; exit 1; }
    # quoted for the guest's shell and for bash -c on the host
    payload_cmd="$(printf '%q' "$test_bin") bpf:: --test-threads=1"
    log "integration tests: $test_bin"
fi

# --- 2. kernels --------------------------------------------------------------
for k in "${kernel_list[@]}"; do
    [[ $k == host ]] && continue
    log "kernel $k: $(package_of "$k")"
    "$here/fetch-kernel.sh" "$(package_of "$k")" "$cache/$k"
done

# --- 3. initramfs ------------------------------------------------------------
initrd=$out/initramfs.cpio
if ((need_vm)); then
    files=("${includes[@]}")
    [[ -n $test_bin && -x $test_bin ]] && files+=("$test_bin")
    [[ -n $tcptop_bin && -x $tcptop_bin ]] && files+=("$tcptop_bin")
    printf '%s\n' "$payload_cmd" >"$out/payload.sh"
    log "initramfs: ${#files[@]} extra file(s)"
    "$here/mkinitramfs.sh" "$initrd" "$out/payload.sh" "$repo" "${files[@]}"
    log "initramfs: $(du -h "$initrd" | cut -f1)"
fi

# --- 4. runs -----------------------------------------------------------------
# Result of each run in $out/logs/<kernel>-<strategy>.result: "PASS <secs>",
# "FAIL <secs> exit=N", or "FAIL <secs> timeout" / "no-exit-line".

run_vm() {
    local k=$1 s=$2 log=$out/logs/$1-$2.log res=$out/logs/$1-$2.result t0=$SECONDS rc status boot
    # A guest that dies before its tests start (software emulation now and then crashes a
    # booting kernel, e.g. an int3 while it patches its own code) is booted once more; a
    # run whose tests started is never repeated.
    for boot in 1 2; do
        set +e
        timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
            -accel tcg,thread=multi -cpu max -m 1G -smp "$smp" \
            -no-user-config -nodefaults -display none -serial stdio -no-reboot \
            -kernel "$cache/$k/kernel" -initrd "$initrd" \
            -append "console=ttyS0 panic=-1 quiet mitigations=off tcptop_probe=$s tcptop_expect_unsupported=$(unsupported_of "$k")" \
            </dev/null >"$log" 2>&1
        rc=$?
        set -e
        if grep -q 'TCPTOP-VM-START' "$log" || ((boot == 2)); then
            break
        fi
        mv "$log" "$log.boot1"
        log "$k/$s: the guest died before its tests started ($log.boot1); booting it again"
    done
    status=$(tr -d '\r' <"$log" | sed -n 's/^TCPTOP-VM-EXIT=\([0-9]*\)$/\1/p' | tail -n1)
    if [[ -z $status ]]; then
        if ((rc == 124 || rc == 137)); then
            echo "FAIL $((SECONDS - t0)) timeout" >"$res"
        else
            echo "FAIL $((SECONDS - t0)) no-exit-line(qemu=$rc)" >"$res"
        fi
    elif ((status == 0)); then
        echo "PASS $((SECONDS - t0))" >"$res"
    else
        echo "FAIL $((SECONDS - t0)) exit=$status" >"$res"
    fi
    log "$k/$s: $(cat "$res")"
}

run_host() {
    local s=$1 log=$out/logs/host-$1.log res=$out/logs/host-$1.result t0=$SECONDS rc
    set +e
    (
        cd "$repo"
        export TCPTOP_PROBE=$s TCPTOP_REQUIRE_BPF=1 RUST_BACKTRACE=1
        export TCPTOP_EXPECT_UNSUPPORTED=$(unsupported_of host)
        echo "TCPTOP-HOST-START kernel=$(uname -r) probe=$s expect_unsupported=$TCPTOP_EXPECT_UNSUPPORTED"
        timeout --kill-after=10 "$vm_timeout" bash -c "$payload_cmd" </dev/null
    ) >"$log" 2>&1
    rc=$?
    set -e
    echo "TCPTOP-HOST-EXIT=$rc" >>"$log"
    if ((rc == 0)); then
        echo "PASS $((SECONDS - t0))" >"$res"
    elif ((rc == 124 || rc == 137)); then
        echo "FAIL $((SECONDS - t0)) timeout" >"$res"
    else
        echo "FAIL $((SECONDS - t0)) exit=$rc" >"$res"
    fi
    log "host/$s: $(cat "$res")"
}

# host runs first and alone (they are timing-sensitive; VMs eat the CPUs)
for k in "${kernel_list[@]}"; do
    [[ $k == host ]] || continue
    for s in "${strategy_list[@]}"; do run_host "$s"; done
done
running=0
for k in "${kernel_list[@]}"; do
    [[ $k == host ]] && continue
    for s in "${strategy_list[@]}"; do
        if ((jobs > 1)); then
            run_vm "$k" "$s" &
            running=$((running + 1))
            if ((running >= jobs)); then
                wait -n || true
                running=$((running - 1))
            fi
        else
            run_vm "$k" "$s"
        fi
    done
done
wait

# --- 5. table ----------------------------------------------------------------
failed=0
star=0
{
    echo
    echo "tcptop kernel matrix ($(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - t_start)) s; logs in $out/logs)"
    printf '%-34s' "kernel"
    for s in "${strategy_list[@]}"; do printf ' %-18s' "$s"; done
    echo
    for k in "${kernel_list[@]}"; do
        if [[ $k == host ]]; then
            label="host $(uname -r)"
        else
            label="$k $(cat "$cache/$k/release" 2>/dev/null)"
        fi
        printf '%-34s' "$label"
        for s in "${strategy_list[@]}"; do
            res=$out/logs/$k-$s.result
            if [[ -f $res ]]; then
                read -r verdict secs why <"$res"
            else
                verdict=FAIL secs=0 why=not-run
            fi
            [[ $verdict == PASS ]] || failed=$((failed + 1))
            mark=
            if is_unsupported "$k" "$s"; then
                mark='*'
                star=1
            fi
            if [[ $verdict == PASS ]]; then
                cell="PASS$mark ${secs}s"
            else
                cell="FAIL$mark(${why%%(*})"
            fi
            printf ' %-18s' "$cell"
        done
        echo
    done
    ((star)) && echo "* the kernel refuses this strategy: the tests checked tcptop's error (TCPTOP_EXPECT_UNSUPPORTED)"
    echo
    if ((failed)); then
        echo "matrix: $failed run(s) FAILED"
        for k in "${kernel_list[@]}"; do
            for s in "${strategy_list[@]}"; do
                f=$out/logs/$k-$s.result
                verdict=FAIL why=not-run
                [[ -f $f ]] && read -r verdict _ why <"$f"
                [[ $verdict == PASS ]] && continue
                echo "  $k/$s: $why -> $out/logs/$k-$s.log"
                # the names libtest lists under its second "failures:" header
                [[ -f $out/logs/$k-$s.log ]] && tr -d '\r' <"$out/logs/$k-$s.log" |
                    awk '/^failures:$/ {n++; next} n == 2 && /^    [^ ]/ {print "      " $1} n == 2 && /^test result/ {exit}'
            done
        done
    else
        echo "matrix: all runs passed"
    fi
} >"$out/summary.txt"
cat "$out/summary.txt"
((failed == 0))
