#!/usr/bin/env bash
# tcptop kernel matrix: run the root BPF tests (`bpf::` in tests/integration/)
# once per attach strategy on the host kernel and on Debian's stock kernels
# booted under QEMU (TCG); a run fails if its tests fail or its kernel logs a
# WARNING or becomes tainted. See tests/vm/README.md.
#
#   tests/vm/run-matrix.sh [--kernels host,5.10,6.1,...] [--strategies auto,fentry,kprobe,tracepoint]
#                          [--payload CMD] [--include FILE]... [--no-build] [--timeout SECS]
#                          [--jobs N] [--smp N] [--out DIR] [--host-unsupported LIST]
set -euo pipefail

# ---------------------------------------------------------------------------
# The kernel table: one line per row, "NAME KERNEL UNSUPPORTED DISABLE STRATEGIES".
# KERNEL: "-" for the running kernel (a host row: the tests run directly on this
#   machine); a Debian package, PACKAGE for the host's own apt sources or
#   PACKAGE/SUITE for another suite (fetch-kernel.sh: a private apt config, the
#   host's packages and sources untouched), fetched with apt-get download (a
#   metapackage is resolved to the concrete linux-image-<release>) and never
#   installed; or "@ROW" for the kernel of another row.
# UNSUPPORTED: the strategies that row refuses ("-" for none): the tests get it
#   as TCPTOP_EXPECT_UNSUPPORTED and then assert tcptop's clear error instead.
#   (The host's is this workplace's sandbox, where fentry and kprobes are blocked;
#   override with --host-unsupported, e.g. "-" on a machine where all attach.)
# DISABLE: TCPTOP_DISABLE for the run, kernel features tcptop treats as refused
#   (fentry, kprobe, tracepoint, sk-storage, map-iter, func-ret, hook-sample), so that its
#   fallbacks run live ("-": none). Passed to a guest as tcptop_disable=...
# STRATEGIES: the strategies this row runs ("-": all; a forced-off row runs only
#   those its switch matters for, to keep the matrix short).
KERNEL_TABLE='
# NAME          KERNEL                      UNSUPPORTED    DISABLE              STRATEGIES
host            -                           fentry,kprobe  -                    -
host-hash       -                           fentry,kprobe  sk-storage           auto
host-rawtp      -                           fentry,kprobe  tp-btf               auto
host-walked     -                           fentry,kprobe  hook-sample          auto
5.10            linux-image-amd64/bullseye  tracepoint     -                    -
6.1             linux-image-amd64           tracepoint     -                    -
6.12            linux-image-6.12-amd64      -              -                    -
sid             linux-image-amd64/sid       -              -                    -
6.12-nofentry   @6.12                       fentry         fentry               auto
6.12-nomapiter  @6.12                       -              map-iter             auto,kprobe
6.12-nostorage  @6.12                       -              sk-storage,map-iter  auto
6.12-nofuncret  @6.12                       -              func-ret             fentry
'
# Why the forced-off rows run what they run: host-hash, the tracepoint hooks and
# iter/tcp on the hash map; host-rawtp, raw_tp lifecycle hooks (no kernel here
# lacks tp_btf); host-walked, every connection sampled at each read, as on
# kernels without bpf_rdonly_cast (6.1 does so with fentry); nofentry, auto's fall back to kprobe;
# nomapiter, both tables (socket storage under fentry, the hash under kprobe) read
# without map iterators; nostorage, fentry on the hash map (kprobe always uses it);
# nofuncret, fentry's UDP receive hook without bpf_get_func_ret.
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
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF

  --kernels LIST      comma-separated row names from the table (default: all:
                      $kernels)
  --strategies LIST   TCPTOP_PROBE values to run (default: $strategies); a row
                      with its own list in the table runs the strategies in both
  --payload CMD       shell command to run instead of the BPF tests (development);
                      it sees TCPTOP_PROBE, TCPTOP_EXPECT_UNSUPPORTED, TCPTOP_DISABLE
                      (when the row has one) and TCPTOP_REQUIRE_BPF=1
  --include FILE      also copy FILE (and its shared libraries) into the guest
  --no-build          do not run cargo; reuse the binaries of the last build
  --timeout SECS      kill a VM run after SECS (default: $vm_timeout)
  --jobs N            VMs run at once (default: $jobs)
  --smp N             vCPUs per VM (default: $smp)
  --out DIR           logs and initramfs (default: target/vm-matrix)
  --host-unsupported LIST  strategies the host kernel refuses ("-": none), for
                      every host row (default: the table's,
                      $(awk '$1 == "host" {print $3}' <<<"$KERNEL_TABLE"))

The table (kernel rows, refused strategies, TCPTOP_DISABLE lists, per-row strategies):
$(awk 'NF {print "  " $0}' <<<"$KERNEL_TABLE")
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

# column N of the table row NAME ("-" for an empty column); fails for no such row
field_of() {
    awk -v n="$1" -v c="$2" 'NF && $1 == n {print (c <= NF ? $c : "-"); found = 1; exit} END {exit !found}' <<<"$KERNEL_TABLE"
}
# the row's column N, "" for "-"
list_of() {
    local v
    v=$(field_of "$1" "$2")
    [[ $v == - ]] && v=
    echo "$v"
}
is_host() { [[ $(field_of "$1" 2) == - ]]; }
# the row whose kernel a row boots ("@6.12" reuses row 6.12's download)
kernel_row_of() {
    local p
    p=$(field_of "$1" 2)
    if [[ $p == @* ]]; then echo "${p#@}"; else echo "$1"; fi
}
package_of() { field_of "$(kernel_row_of "$1")" 2; }
# the row's refused strategies, comma-separated, "" for none
unsupported_of() {
    if is_host "$1" && [[ -n $host_unsupported ]]; then
        [[ $host_unsupported == - ]] || echo "$host_unsupported"
    else
        list_of "$1" 3
    fi
}
disable_of() { list_of "$1" 4; }
is_unsupported() { [[ ",$(unsupported_of "$1")," == *",$2,"* ]]; }
# whether row K runs strategy S (its own list, if any, and --strategies)
runs() {
    local own
    own=$(list_of "$1" 5)
    [[ -z $own || ",$own," == *",$2,"* ]]
}
for k in "${kernel_list[@]}"; do
    field_of "$k" 1 >/dev/null || { echo "run-matrix: kernel '$k' is not in the table" >&2; exit 2; }
    b=$(kernel_row_of "$k")
    [[ $b == "$k" ]] && continue
    p=$(field_of "$b" 2) || p=-
    [[ $p != @* && $p != - ]] || { echo "run-matrix: row '$k' names '@$b', which is not a VM kernel row" >&2; exit 2; }
done
for s in "${strategy_list[@]}"; do
    [[ " $STRATEGIES_ALL " == *" $s "* ]] || { echo "run-matrix: unknown strategy '$s'" >&2; exit 2; }
done

need_vm=0
for k in "${kernel_list[@]}"; do is_host "$k" || need_vm=1; done
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
    # quoted for the guest's shell and for bash -c on the host; first the plan tcptop
    # chooses there, as a TCPTOP-PLAN= line (none where the strategy is refused)
    plan_cmd="$(printf '%q' "$tcptop_bin") -b -v --backend ebpf --probe \"\$TCPTOP_PROBE\" 0.01 1 2>&1 >/dev/null"
    plan_cmd+=" | sed -n 's/^tcptop: using the \\(.*\\) probe strategy\$/TCPTOP-PLAN=\\1/p'"
    tests=$(printf '%q' "$test_bin")
    # and in each guest's auto run, the sock_diag collector's tests (the kernel's netlink
    # attributes differ; they do not depend on the probes), less the two that need what
    # busybox lacks (setpriv --reuid, ip netns); the host runs them all in scripts/test
    sockdiag_cmd="{ [ \"\$(hostname)\" != tcptop-vm ] || [ \"\$TCPTOP_PROBE\" != auto ] || [ -n \"\$TCPTOP_DISABLE\" ] ||"
    sockdiag_cmd+=" $tests sockdiag:: --test-threads=1 --skip sockdiag::an_unprivileged --skip sockdiag::identical_tuples; }"
    payload_cmd="$plan_cmd; $tests bpf:: --test-threads=1 && $sockdiag_cmd"
    log "integration tests: $test_bin"
fi

# --- 2. kernels --------------------------------------------------------------
# once per kernel row, also when only a row that reuses it ("@ROW") was selected
fetched=" "
for k in "${kernel_list[@]}"; do
    is_host "$k" && continue
    b=$(kernel_row_of "$k")
    [[ $fetched == *" $b "* ]] && continue
    fetched+="$b "
    log "kernel $b: $(package_of "$b")"
    "$here/fetch-kernel.sh" "$(package_of "$b")" "$cache/$b"
done

# --- 3. initramfs ------------------------------------------------------------
initrd=$out/initramfs.cpio
if ((need_vm)); then
    files=("${includes[@]}")
    # each kernel's sock_diag modules, at their paths here (/init loads its own kernel's)
    for k in "${kernel_list[@]}"; do
        is_host "$k" && continue
        for module in "$cache/$(kernel_row_of "$k")"/modules/*.ko; do
            [[ -f $module && " ${files[*]} " != *" $module "* ]] && files+=("$module")
        done
    done
    [[ -n $test_bin && -x $test_bin ]] && files+=("$test_bin")
    [[ -n $tcptop_bin && -x $tcptop_bin ]] && files+=("$tcptop_bin")
    printf '%s\n' "$payload_cmd" >"$out/payload.sh"
    log "initramfs: ${#files[@]} extra file(s)"
    "$here/mkinitramfs.sh" "$initrd" "$out/payload.sh" "$repo" "${files[@]}"
    log "initramfs: $(du -h "$initrd" | cut -f1)"
fi

# --- 4. runs -----------------------------------------------------------------
# Result of each run in $out/logs/<row>-<strategy>.result: "PASS <secs>" or
# "FAIL <secs> <reasons>", the reasons comma-separated: exit=N, timeout or
# no-exit-line(qemu=N) from the run, kernel-warning and tainted from its kernel.
#
# The kernel's report on a run, the lines /init (guest) or kernel_report (host)
# put at the end of the run's log:
#   TCPTOP-VM-KLOG: <line>            a WARNING the kernel logged during the run, with
#                                     its message and stack (one per line)
#   TCPTOP-VM-KERNEL-WARNING=<n>      how many "WARNING:" lines it logged during the run
#   TCPTOP-VM-TAINTED=<after> <before>  /proc/sys/kernel/tainted after and before
# (TCPTOP-HOST-... on a host row). "During the run": after the marker line written
# to /dev/kmsg just before the payload started.

# kernel_report PREFIX MARKER TAINT_BEFORE: the lines above, for the host's kernel
kernel_report() {
    local prefix=$1 marker=$2 taint0=$3 klog n
    if ! klog=$(dmesg 2>/dev/null); then
        echo "$prefix-KERNEL-WARNING=unreadable"
    elif ! klog=$(awk -v m="$marker" 'index($0, m) {buf = ""; found = 1; next} {buf = buf $0 "\n"}
                      END {printf "%s", buf; exit !found}' <<<"$klog"); then
        # no marker (the log wrapped past it, or it could not be written): the run's log is lost
        echo "$prefix-KERNEL-WARNING=lost"
    else
        n=$(grep -c 'WARNING:' <<<"$klog") || true
        warning_context <<<"$klog" | sed "s/^/$prefix-KLOG: /"
        echo "$prefix-KERNEL-WARNING=${n:-0}"
    fi
    echo "$prefix-TAINTED=$(cat /proc/sys/kernel/tainted) $taint0"
}
# the kernel log lines of each WARNING report: the two lines before it (the
# "cut here" line and the WARN's message) and up to 40 after, to its end marker
warning_context() {
    awk '/WARNING:/ { if (p2 != "" && left == 0) print p2; if (p1 != "" && left == 0) print p1; left = 41 }
         left > 0 { print; left--; if (/---\[ end trace/) left = 0 }
         { p2 = p1; p1 = $0 }'
}

# taint bit letters (Documentation/admin-guide/tainted-kernels.rst), for the failure list
taint_letters() {
    local t=$1 letters=PFSRMBUDAWCIOELKXTNJ i out=
    for ((i = 0; i < ${#letters}; i++)); do
        (((t >> i) & 1)) && out+=${letters:i:1}
    done
    echo "${out:-none}"
}

# kernel_verdict LOG: the kernel's failure reasons for the run in LOG ("" if clean)
kernel_verdict() {
    local log=$1 n after before why=
    n=$(tr -d '\r' <"$log" | sed -n 's/^TCPTOP-[A-Z]*-KERNEL-WARNING=\(.*\)$/\1/p' | tail -n1)
    read -r after before < <(tr -d '\r' <"$log" | sed -n 's/^TCPTOP-[A-Z]*-TAINTED=//p' | tail -n1) || true
    if [[ -n $n && $n != 0 ]]; then
        case $n in
            unreadable) why+=,kernel-log-unreadable ;;
            lost) why+=,kernel-log-lost ;;
            *) why+=,kernel-warning ;;
        esac
    fi
    if [[ -n ${after:-} && -n ${before:-} ]] && ((after & ~before)); then
        why+=,tainted
    fi
    echo "${why#,}"
}

# record_result RES LOG T0 REASONS: write the run's result with the kernel's verdict
record_result() {
    local res=$1 log=$2 t0=$3 why=$4 kv
    kv=$(kernel_verdict "$log")
    [[ -n $kv ]] && why=${why:+$why,}$kv
    if [[ -z $why ]]; then
        echo "PASS $((SECONDS - t0))" >"$res"
    else
        echo "FAIL $((SECONDS - t0)) $why" >"$res"
    fi
}

run_vm() {
    local k=$1 s=$2 log=$out/logs/$1-$2.log res=$out/logs/$1-$2.result t0=$SECONDS rc status boot why=
    local kernel disable
    kernel=$cache/$(kernel_row_of "$k")/kernel
    disable=$(disable_of "$k")
    # A guest that dies before its tests start (software emulation now and then crashes a
    # booting kernel, e.g. an int3 while it patches its own code) is booted once more; a
    # run whose tests started is never repeated.
    for boot in 1 2; do
        set +e
        timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
            -accel tcg,thread=multi -cpu max -m 1G -smp "$smp" \
            -no-user-config -nodefaults -display none -serial stdio -no-reboot \
            -kernel "$kernel" -initrd "$initrd" \
            -append "console=ttyS0 panic=-1 quiet mitigations=off tcptop_probe=$s tcptop_expect_unsupported=$(unsupported_of "$k")${disable:+ tcptop_disable=$disable} tcptop_modules=$cache/$(kernel_row_of "$k")/modules" \
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
        if ((rc == 124 || rc == 137)); then why=timeout; else why="no-exit-line(qemu=$rc)"; fi
    elif ((status != 0)); then
        why=exit=$status
    fi
    record_result "$res" "$log" "$t0" "$why"
    log "$k/$s: $(cat "$res")"
}

run_host() {
    local k=$1 s=$2 log=$out/logs/$1-$2.log res=$out/logs/$1-$2.result t0=$SECONDS rc why='' marker taint0
    marker="tcptop-matrix: $k/$s start $$.$RANDOM"
    taint0=$(cat /proc/sys/kernel/tainted)
    echo "$marker" >/dev/kmsg 2>/dev/null || true
    set +e
    (
        cd "$repo"
        export TCPTOP_PROBE=$s TCPTOP_REQUIRE_BPF=1 RUST_BACKTRACE=1
        export TCPTOP_EXPECT_UNSUPPORTED=$(unsupported_of "$k")
        disable=$(disable_of "$k")
        if [[ -n $disable ]]; then export TCPTOP_DISABLE=$disable; else unset TCPTOP_DISABLE; fi
        echo "TCPTOP-HOST-START kernel=$(uname -r) probe=$s expect_unsupported=$TCPTOP_EXPECT_UNSUPPORTED disable=$disable"
        timeout --kill-after=10 "$vm_timeout" bash -c "$payload_cmd" </dev/null
    ) >"$log" 2>&1
    rc=$?
    set -e
    echo "TCPTOP-HOST-EXIT=$rc" >>"$log"
    kernel_report TCPTOP-HOST "$marker" "$taint0" >>"$log"
    if ((rc == 124 || rc == 137)); then why=timeout; elif ((rc != 0)); then why=exit=$rc; fi
    record_result "$res" "$log" "$t0" "$why"
    log "$k/$s: $(cat "$res")"
}

# host rows first and alone (they are timing-sensitive; VMs eat the CPUs)
for k in "${kernel_list[@]}"; do
    is_host "$k" || continue
    for s in "${strategy_list[@]}"; do
        runs "$k" "$s" && run_host "$k" "$s"
    done
done
running=0
for k in "${kernel_list[@]}"; do
    is_host "$k" && continue
    for s in "${strategy_list[@]}"; do
        runs "$k" "$s" || continue
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
# row_label K: the row's name, kernel release and TCPTOP_DISABLE list
row_label() {
    local k=$1 label disable
    if is_host "$k"; then
        label="$k $(uname -r)"
    else
        label="$k $(cat "$cache/$(kernel_row_of "$k")/release" 2>/dev/null)"
    fi
    disable=$(disable_of "$k")
    echo "$label${disable:+ disable=$disable}"
}
# cell K S: the table cell of row K, strategy S ("-": not run by this row)
cell() {
    local k=$1 s=$2 res=$out/logs/$1-$2.result verdict=FAIL secs=0 why=not-run mark=
    runs "$k" "$s" || { echo -; return; }
    [[ -f $res ]] && read -r verdict secs why <"$res"
    is_unsupported "$k" "$s" && mark='*'
    if [[ $verdict == PASS ]]; then
        echo "PASS$mark ${secs}s"
    else
        # "no-exit-line(qemu=1)" -> "no-exit-line"
        echo "FAIL$mark($(sed 's/([^)]*)//g' <<<"$why"))"
    fi
}
# failure_details K S: the failed tests and the kernel's WARNING lines of a failed run
failure_details() {
    local log=$out/logs/$1-$2.log after before
    [[ -f $log ]] || return 0
    # the names libtest lists under its second "failures:" header (awk reads on to the
    # end: exiting early would kill tr with SIGPIPE, which pipefail makes an error)
    tr -d '\r' <"$log" |
        awk '/^failures:$/ {n++; next} n == 2 && /^    [^ ]/ {print "      " $1} n == 2 && /^test result/ {n = 3}'
    # the WARNING lines with the message before each
    tr -d '\r' <"$log" | sed -n 's/^TCPTOP-[A-Z]*-KLOG: //p' |
        awk '/WARNING:/ { if (prev !~ /cut here/ && prev != "") print "      kernel: " prev; print "      kernel: " $0 } { prev = $0 }'
    read -r after before < <(tr -d '\r' <"$log" | sed -n 's/^TCPTOP-[A-Z]*-TAINTED=//p' | tail -n1) || true
    if [[ -n ${after:-} && -n ${before:-} ]] && ((after & ~before)); then
        echo "      kernel: tainted $before -> $after (new: $(taint_letters $((after & ~before))))"
    fi
}

failed=0
star=0
dash=0
w_label=6
declare -A cells=() w_cell=()
for s in "${strategy_list[@]}"; do w_cell[$s]=12; done
for k in "${kernel_list[@]}"; do
    label=$(row_label "$k")
    ((${#label} > w_label)) && w_label=${#label}
    for s in "${strategy_list[@]}"; do
        c=$(cell "$k" "$s")
        cells[$k/$s]=$c
        ((${#c} > w_cell[$s])) && w_cell[$s]=${#c}
        [[ $c == FAIL* ]] && failed=$((failed + 1))
        [[ $c == *'*'* ]] && star=1
        [[ $c == - ]] && dash=1
    done
done
{
    echo
    echo "tcptop kernel matrix ($(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - t_start)) s; logs in $out/logs)"
    printf "%-${w_label}s" "kernel"
    for s in "${strategy_list[@]}"; do printf "  %-${w_cell[$s]}s" "$s"; done
    echo
    for k in "${kernel_list[@]}"; do
        printf "%-${w_label}s" "$(row_label "$k")"
        for s in "${strategy_list[@]}"; do printf "  %-${w_cell[$s]}s" "${cells[$k/$s]}"; done
        echo
    done
    ((star)) && echo "* the kernel refuses this strategy: the tests checked tcptop's error (TCPTOP_EXPECT_UNSUPPORTED)"
    ((dash)) && echo "- not run: the row runs only the strategies its TCPTOP_DISABLE list matters for"
    echo
    echo "plans chosen (tcptop -b -v in each row's first run):"
    for k in "${kernel_list[@]}"; do
        for s in "${strategy_list[@]}"; do
            [[ -f $out/logs/$k-$s.log ]] || continue
            plan=$(tr -d '\r' <"$out/logs/$k-$s.log" | sed -n 's/^TCPTOP-PLAN=//p' | tail -n1)
            printf "  %-${w_label}s %s: %s\n" "$k" "$s" "${plan:-none}"
            break
        done
    done
    echo
    if ((failed)); then
        echo "matrix: $failed run(s) FAILED"
        for k in "${kernel_list[@]}"; do
            for s in "${strategy_list[@]}"; do
                [[ ${cells[$k/$s]} == FAIL* ]] || continue
                f=$out/logs/$k-$s.result
                why=not-run
                [[ -f $f ]] && read -r _ _ why <"$f"
                echo "  $k/$s: $why -> $out/logs/$k-$s.log"
                failure_details "$k" "$s"
            done
        done
    else
        echo "matrix: all runs passed"
    fi
} >"$out/summary.txt"
cat "$out/summary.txt"
((failed == 0))
