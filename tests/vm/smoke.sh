#!/bin/sh
# Smoke payload for the matrix (busybox sh or bash): runs the tcptop binary
# itself, in batch mode, with the strategy from $TCPTOP_PROBE, while loopback
# traffic flows, and checks that it exits 0 and shows the connection (or, for a
# strategy listed in $TCPTOP_EXPECT_UNSUPPORTED, that it refuses clearly).
#
#   tests/vm/run-matrix.sh --include tests/vm/smoke.sh \
#       --payload "$PWD/tests/vm/smoke.sh $PWD/target/debug/tcptop"
#
# Not a substitute for the bpf:: tests: it only shows that tcptop attaches and
# prints, with no check of the numbers.
tcptop=${1:?usage: smoke.sh /path/to/tcptop}
probe=${TCPTOP_PROBE:-auto}
port=${SMOKE_PORT:-45123}
nc() { busybox nc "$@"; }
cat /proc/version
out=/tmp/smoke.$$

# a listener that swallows what it gets (its stdin stays open: busybox nc
# closes the connection at EOF on stdin), and a client sending 1 MiB every
# half second for ~5 s, to span tcptop's start and its two intervals
(sleep 8 | nc -l -p "$port" >/dev/null 2>&1) &
sleep 0.3
(for i in 1 2 3 4 5 6 7 8 9 10; do dd if=/dev/zero bs=64k count=16 2>/dev/null; sleep 0.5; done |
    nc 127.0.0.1 "$port" >/dev/null 2>&1) &
sleep 0.3

"$tcptop" -b -v -a --probe "$probe" 1 2 >"$out" 2>&1
rc=$?
wait
cat "$out"
echo "smoke: tcptop --probe $probe exited $rc"
case ",${TCPTOP_EXPECT_UNSUPPORTED:-}," in
    *",$probe,"*)
        # this kernel refuses the strategy: tcptop must fail and say so
        [ "$rc" -ne 0 ] || { echo "smoke: expected a refusal"; exit 1; }
        grep -q "cannot run on this kernel" "$out" || { echo "smoke: unclear refusal"; exit 1; }
        echo "smoke: refused as expected"
        ;;
    *)
        [ "$rc" -eq 0 ] || exit 1
        grep -q ":$port " "$out" || { echo "smoke: port $port not in the output"; exit 1; }
        ;;
esac
