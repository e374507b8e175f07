#!/bin/bash
# A payload over 2 GiB (three 800 MiB files) pulled by 2 ranks as nodes, once
# with each exchange (ring, Allgatherv): each node reads its 1.2 GiB share (its
# chunks, at file offsets past 2 GiB and 4 GiB too) and the chunks are exchanged
# in transfers under 2 GiB; every file reads back identical through both mounts,
# and each daemon's RSS stays within payload x 1.05 + 32 MiB.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
avail_gib=$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)
[ "$avail_gib" -ge 10 ] || skip "needs 10 GiB of available memory, $avail_gib GiB here"
[ "$(free_disk_gib "$WORK")" -ge 8 ] || skip "needs 8 GiB free in $WORK, $(free_disk_gib "$WORK") GiB here"

src=$WORK/src
mkdir -p "$src/big" "$WORK/m0" "$WORK/m1"
at_exit unmount_all "$WORK/m0" "$WORK/m1"
# Every 8-byte word holds its own position (distinct per file): a misplaced or
# missing chunk anywhere changes the bytes. numpy writes this at disk speed.
"${PY_ISOLATED[@]}" - "$src/big" <<'EOF' || fail "cannot write the test files"
import sys
sys.path.append("/usr/lib/python3/dist-packages")
import numpy as np
words = 800 * 1024 * 1024 // 8
step = 64 * 1024 * 1024 // 8
for i in range(3):
    with open(f"{sys.argv[1]}/part{i}.bin", "wb") as f:
        for start in range(0, words, step):
            (np.arange(start, min(start + step, words), dtype=np.uint64) + i * words).tofile(f)
EOF
echo small >"$src/small.txt"
"$PYFS_PACK" -q -p "$PY" "$WORK/big.h5" "$src" || fail "pyfs-pack failed"

for exchange in ring allgatherv; do
	mpirun -np 2 "$PYFS_MOUNT" -v --ranks-as-nodes --exchange=$exchange --ready-file="$WORK/ready%r" \
		"$WORK/big.h5" "$WORK/m%r" 2>"$WORK/err" || fail "mpirun pyfs-mount ($exchange) failed: $(cat "$WORK/err")"
	grep -E 'pull|node|RSS' "$WORK/err" | sed 's/^/  /' >&2
	payload=$(sed -nE 's/.*all nodes read [0-9]+ bytes of the archive file for a ([0-9]+)-byte payload.*/\1/p' "$WORK/err")
	[ "$payload" -gt 2147483648 ] || fail "payload of $payload bytes is not over 2 GiB"
	shares=0
	while read -r node read share; do
		[ "$share" -gt 1073741824 ] || fail "$exchange: node $node got a $share-byte share"
		if [ "$read" -lt "$share" ] || [ "$read" -gt $((share + 1048576)) ]; then
			fail "$exchange: node $node read $read bytes for a $share-byte share"
		fi
		shares=$((shares + share))
	done < <(sed -nE 's/.*node ([0-9]+) \(rank [0-9]+\): read ([0-9]+) bytes .* a ([0-9]+)-byte share of the payload.*/\1 \2 \3/p' "$WORK/err")
	[ "$shares" -eq "$payload" ] || fail "$exchange: shares add up to $shares bytes, the payload has $payload"

	for r in 0 1; do
		for i in 0 1 2; do
			cmp "$src/big/part$i.bin" "$WORK/m$r/big/part$i.bin" || fail "$exchange: part$i.bin differs through m$r"
		done
		[ "$(cat "$WORK/m$r/small.txt")" = small ] || fail "$exchange: small.txt differs through m$r"
		rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$WORK/ready$r")/status")
		# shellcheck disable=SC2017 # integer MiB on purpose
		limit_kib=$((payload / 1024 * 105 / 100 + 32 * 1024))
		note "$exchange: daemon $r: RSS $((rss_kib / 1024)) MiB for a $((payload / 1048576)) MiB payload (limit $((limit_kib / 1024)) MiB)"
		[ "$rss_kib" -le "$limit_kib" ] || fail "$exchange: daemon $r RSS $rss_kib KiB over $limit_kib KiB"
	done
	unmount_all "$WORK/m0" "$WORK/m1"
done
exit 0
