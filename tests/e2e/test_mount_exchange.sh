#!/bin/bash
# The payload pull at 1 to 5 ranks as nodes, with both exchanges (--exchange=ring and
# allgatherv, as the daemon must report) and --readers 1, 2 and the default 8 (more
# than the nodes), on three
# archives: an odd-sized payload of 41 chunks of 512 KiB (the last one partial), a
# payload smaller than one chunk, and an empty payload. For every run:
#  - the read blocks are the largest of 4, 2 and 1 MiB that gives R readers at least
#    8 rounds of blocks (else 1 MiB): 1 MiB for the odd payload at 3 readers or more;
#  - every node's mount equals the source (diff -r);
#  - R = min(N, readers) nodes are readers, reader r being node floor(r * N / R),
#    each reading exactly its share (block b, and so its chunks, belongs to reader
#    b mod R; node 0 reads the metadata too); the others read nothing;
#  - every node receives the bytes it did not read itself, and no more.
# The defaults (no --exchange, no --chunk): the ring, with chunks of at most 256 KiB.
# Then, under strace, the nodes that are not readers never open the archive; a
# daemon started by a rank bound to one core serves on every CPU; and invalid
# --readers, --exchange and --chunk values are usage errors.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"

MIB=1048576
CHUNK=$((512 * 1024))
# odd: 20 MiB and 12,350 bytes (41 chunks); small: 3 files, a few KiB;
# empty: only empty files, a directory and a symlink.
mkdir -p "$WORK/odd/d" "$WORK/small/d" "$WORK/empty/d"
head -c $((13 * MIB)) /dev/urandom >"$WORK/odd/d/thirteen"
head -c $((7 * MIB + 12345)) /dev/urandom >"$WORK/odd/seven"
echo tiny >"$WORK/odd/tiny"
printf 'small %s\n' 1 2 3 >"$WORK/small/a"
head -c 3001 /dev/urandom >"$WORK/small/d/b"
: >"$WORK/small/zero"
: >"$WORK/empty/zero"
: >"$WORK/empty/d/also-zero"
ln -s zero "$WORK/empty/link"
for t in odd small empty; do
	"$PYFS_PACK" -q --no-compile "$WORK/$t.h5" "$WORK/$t" || fail "pyfs-pack $t failed"
done

rank_mountpoints 5

# check_run TREE N EXCHANGE READERS: pull TREE's archive with N ranks as nodes and check it.
check_run() {
	local tree=$1 n=$2 exchange=$3 readers=$4 opt=() what payload chunks eff r node c len block want
	local -a share reader_of
	what="$tree, $n node(s), $exchange, --readers=${readers:-default}"
	[ -z "$readers" ] || opt=(--readers="$readers")
	mpirun -np "$n" "$PYFS_MOUNT" -v --ranks-as-nodes --exchange="$exchange" --chunk=$((CHUNK / 1024)) "${opt[@]}" \
		"$WORK/$tree.h5" "$WORK/mnt%r" >"$WORK/out" 2>"$WORK/err" ||
		fail "$what: mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
	for ((node = 0; node < n; node++)); do
		is_mounted "$WORK/mnt$node" || fail "$what: node $node is not mounted"
		diff_trees "$WORK/$tree" "$WORK/mnt$node"
	done

	# The expected shares, from the payload size alone.
	payload=$(sed -nE 's/.*all nodes read [0-9]+ bytes of the archive file for a ([0-9]+)-byte payload.*/\1/p' "$WORK/err")
	[ -n "$payload" ] || fail "$what: no total in the report: $(cat "$WORK/err")"
	block=$(sed -nE 's/.* chunk\(s\) of [0-9]+ KiB \(blocks of ([0-9]+) KiB\).*/\1/p' "$WORK/err")
	[ -n "$block" ] || fail "$what: no block size in the report: $(cat "$WORK/err")"
	block=$((block * 1024))
	eff=${readers:-8}
	[ "$eff" -le "$n" ] || eff=$n
	want=$((4 * MIB))
	while [ "$want" -gt "$MIB" ] && [ $((want * eff * 8)) -gt "$payload" ]; do want=$((want / 2)); done
	[ "$block" -eq "$want" ] || fail "$what: blocks of $block bytes, expected $want"
	grep -q "), $exchange exchange [0-9.]* s;" "$WORK/err" ||
		fail "$what: the report does not name the $exchange exchange: $(grep -m1 'pull [0-9.]* s' "$WORK/err")"
	chunks=$(((payload + CHUNK - 1) / CHUNK))
	for ((node = 0; node < n; node++)); do
		share[node]=0
		reader_of[node]=-1
	done
	for ((r = 0; r < eff; r++)); do
		reader_of[r * n / eff]=$r
	done
	for ((c = 0; c < chunks; c++)); do
		len=$((payload - c * CHUNK < CHUNK ? payload - c * CHUNK : CHUNK))
		node=$(((c * CHUNK / block % eff) * n / eff))
		share[node]=$((share[node] + len))
	done

	# "node N (rank R): read B bytes of the archive file for a S-byte share of the
	# payload (reader r of R | not a reader); sent|contributed X, received Y bytes; ..."
	grep -E '^pyfs-mount(\[rank 0\])?: node [0-9]+ \(rank' "$WORK/err" >"$WORK/nodes" || true
	[ "$(wc -l <"$WORK/nodes")" -eq "$n" ] || fail "$what: expected $n node reports: $(cat "$WORK/err")"
	local seen=0 read got role received
	while IFS='|' read -r node read got role received; do
		seen=$((seen + 1))
		[ "$got" -eq "${share[node]}" ] || fail "$what: node $node has a $got-byte share, expected ${share[node]}"
		if [ "${reader_of[node]}" -ge 0 ]; then
			[ "$role" = "reader ${reader_of[node]} of $eff" ] || fail "$what: node $node is '$role', expected reader ${reader_of[node]} of $eff"
		else
			[ "$role" = "not a reader" ] || fail "$what: node $node is '$role', expected not a reader"
		fi
		if [ "$node" -eq 0 ]; then
			# Node 0 also reads the metadata (a few KiB here).
			if [ "$read" -lt "$got" ] || [ "$read" -gt $((got + MIB)) ]; then
				fail "$what: node 0 read $read bytes for a $got-byte share"
			fi
		else
			[ "$read" -eq "$got" ] || fail "$what: node $node read $read bytes for a $got-byte share"
		fi
		[ "$n" -eq 1 ] || [ "$received" -eq $((payload - got)) ] ||
			fail "$what: node $node received $received bytes, expected $((payload - got))"
	done < <(sed -nE 's/.*node ([0-9]+) \(rank [0-9]+\): read ([0-9]+) bytes of the archive file for a ([0-9]+)-byte share of the payload \(([^)]*)\); [a-z]+ [0-9]+, received ([0-9]+) bytes.*/\1|\2|\3|\4|\5/p' "$WORK/nodes")
	[ "$seen" -eq "$n" ] || fail "$what: $seen of $n node reports parsed: $(cat "$WORK/nodes")"
	unmount_all "${mnts[@]}"
}

# Usage errors: exit 2 and one line naming the option.
for bad in --readers=0 --readers=x --exchange=tree --chunk=32 --chunk=100 --chunk=2097152; do
	expect_fail "$bad" "$PYFS_MOUNT" "$bad" "$WORK/odd.h5" "$WORK/mnt0"
	rc=0
	"$PYFS_MOUNT" "$bad" "$WORK/odd.h5" "$WORK/mnt0" 2>/dev/null || rc=$?
	[ "$rc" -eq 2 ] || fail "$bad: exit $rc, expected 2 (usage)"
	expect_message "invalid ${bad%%=*} '${bad#*=}'"
done

runs=0
for n in 1 2 3 4 5; do
	for exchange in ring allgatherv; do
		for readers in 1 2 ""; do
			check_run odd "$n" "$exchange" "$readers"
			runs=$((runs + 1))
		done
	done
done
for tree in small empty; do
	for n in 1 3 5; do
		for exchange in ring allgatherv; do
			check_run "$tree" "$n" "$exchange" 2
			runs=$((runs + 1))
		done
	done
done
note "$runs pulls checked"

# The defaults: the ring, in chunks of at most 256 KiB (the 20 MiB payload at
# 3 nodes would get 512 KiB ones: the largest with 8 per node that fit), 1 MiB
# read blocks.
mpirun -np 3 "$PYFS_MOUNT" -v --ranks-as-nodes "$WORK/odd.h5" "$WORK/mnt%r" >"$WORK/out" 2>"$WORK/err" ||
	fail "default pull: mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
for node in 0 1 2; do
	diff_trees "$WORK/odd" "$WORK/mnt$node"
done
grep -qE " chunk\(s\) of 256 KiB \(blocks of 1024 KiB\), ring exchange [0-9.]+ s;" "$WORK/err" ||
	fail "default pull: expected the ring in 256 KiB chunks: $(grep -m1 'pull [0-9.]* s' "$WORK/err")"
unmount_all "${mnts[@]}"

# A rank bound to one core (mpirun --bind-to core): the serving daemon may use
# every CPU this test may.
mine=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
if [ "$(nproc)" -gt 1 ]; then
	rm -f "$WORK/ready0"
	mpirun -np 1 --bind-to core "$PYFS_MOUNT" --ready-file="$WORK/ready0" "$WORK/odd.h5" "$WORK/mnt0" \
		>"$WORK/out" 2>&1 || fail "mpirun --bind-to core pyfs-mount failed: $(tail -c 600 "$WORK/out")"
	daemon_cpus=$(awk '/^Cpus_allowed_list:/ { print $2 }' "/proc/$(cat "$WORK/ready0")/status")
	unmount_all "${mnts[@]}"
	[ "$daemon_cpus" = "$mine" ] || fail "the daemon of a rank bound to one core runs on CPUs $daemon_cpus, not $mine"
	note "a rank bound to one core: its daemon serves on CPUs $daemon_cpus"
fi

# Under strace: with 5 nodes and 2 readers (nodes 0 and 2), exactly two processes
# open the archive. strace follows the daemons too, so it ends after the unmount.
command -v strace >/dev/null || skip "strace is missing (apt-get install strace): the open count is not checked"
strace -f -ff -e trace=openat,open -o "$WORK/trace" \
	mpirun -np 5 "$PYFS_MOUNT" --ranks-as-nodes --readers=2 --ready-file="$WORK/ready%r" \
	"$WORK/odd.h5" "$WORK/mnt%r" >"$WORK/strace.out" 2>&1 &
tracer=$!
at_exit "kill $tracer 2>/dev/null || true"
for r in 0 1 2 3 4; do
	wait_until 60 test -s "$WORK/ready$r" || fail "rank $r did not mount under strace: $(tail -c 600 "$WORK/strace.out")"
done
unmount_all "${mnts[@]}"
wait "$tracer" || fail "mpirun under strace failed: $(tail -c 600 "$WORK/strace.out")"
openers=$(grep -l -F "/odd.h5\"" "$WORK"/trace.* | wc -l)
[ "$openers" -eq 2 ] || fail "$openers processes opened the archive, expected 2 (the readers): $(grep -F "/odd.h5\"" "$WORK"/trace.* | head -5)"
note "5 nodes, 2 readers: 2 processes opened the archive"
exit 0
