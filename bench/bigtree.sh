#!/bin/bash
# bigtree.sh - large trees: cold and warm `find` over a synthetic tree of FILES
# files (directories of 1,000 under 10 x 100 parents) on pyfs (default, and
# -o readdirplus=yes / =no) and squashfuse_ll, and warm `ls -lR` of the first
# 100 directories (100k files) on pyfs against the tree on local disk.
# Rounds are interleaved in shuffled order; every pyfs/squashfuse run is a
# fresh mount (cold) after dropping the page cache (as root). Prints one line
# per run and medians at the end.
#
#   usage: bench/bigtree.sh [FILES (1000000)] [ROUNDS (5)] [WORKDIR (/tmp/pyfs-bigtree)]
#   needs: a build in ./build (or $PYFS_PACK, $PYFS_MOUNT), squashfuse_ll, mksquashfs
set -euo pipefail
files=${1:-1000000} rounds=${2:-5} work=${3:-/tmp/pyfs-bigtree}
here=$(cd "$(dirname "$0")/.." && pwd)
pack=${PYFS_PACK:-$here/build/packer/pyfs-pack}
mount=${PYFS_MOUNT:-$here/build/fusefs/pyfs-mount}
mnt=$work/mnt
mkdir -p "$work" "$mnt"
trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT

if [ ! -f "$work/tree.h5" ]; then
	python3 - "$work/tree" $((files / 1000)) <<'EOF'
import os, sys
root, ndirs = sys.argv[1], int(sys.argv[2])
for d in range(ndirs):
    p = os.path.join(root, f"d{d // 100:02d}", f"s{d % 100:02d}")
    os.makedirs(p, exist_ok=True)
    for f in range(1000):
        fd = os.open(os.path.join(p, f"file_{f:04d}.py"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"x = 1\n")
        os.close(fd)
EOF
	"$pack" -q --no-compile "$work/tree.h5" "$work/tree"
	mksquashfs "$work/tree" "$work/tree.sqfs" -comp zstd -noappend -quiet -no-progress >/dev/null
fi

drop() { if [ "$(id -u)" -eq 0 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }

declare -A cmd=(
	[squashfuse_ll]="squashfuse_ll $work/tree.sqfs $mnt"
	[pyfs]="$mount $work/tree.h5 $mnt"
	[pyfs_readdirplus_yes]="$mount -o readdirplus=yes $work/tree.h5 $mnt"
	[pyfs_readdirplus_no]="$mount -o readdirplus=no $work/tree.h5 $mnt"
)
log=$work/runs.log
: >"$log"
for _ in $(seq "$rounds"); do
	for v in $(printf '%s\n' "${!cmd[@]}" | shuf); do
		drop
		${cmd[$v]} >/dev/null
		cold=$(seconds find "$mnt")
		warm=$(seconds find "$mnt")
		lslr=-
		[ "$v" = pyfs ] && ls -lR "$mnt/d00" >/dev/null && lslr=$(seconds ls -lR "$mnt/d00")
		fusermount3 -u "$mnt"
		ext4=-
		[ "$v" = pyfs ] && ls -lR "$work/tree/d00" >/dev/null && ext4=$(seconds ls -lR "$work/tree/d00")
		echo "$v cold_find $cold warm_find $warm warm_ls_lR_100k $lslr local_ls_lR_100k $ext4" | tee -a "$log"
	done
done
echo "medians over $rounds rounds ($files files):"
python3 - "$log" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    for key, value in zip(f[1::2], f[2::2]):
        if value != "-":
            runs.setdefault((f[0], key), []).append(float(value))
for (variant, key), values in sorted(runs.items()):
    print(f"  {variant:22} {key:18} {statistics.median(values):.3f} s")
EOF
