#!/bin/bash
# Directory listings and readdirplus: a listing of a small directory brings the
# attributes of its entries along (a stat of each afterwards reaches the daemon
# not once), a listing of a large one does not (the kernel makes no inode for
# entries nobody looks at: each later stat is one lookup). Both list completely
# and in order, in one getdents and in many, with and without -o readdirplus=no
# and =yes. The daemon's counters (pyfs-mount --stats) tell what reached it.
. "$(dirname "$0")/lib.sh"
need_fuse
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"

src=$WORK/src mnt=$WORK/mnt
mkdir -p "$src/small" "$src/large" "$mnt"
(cd "$src/small" && seq -f "f%04g" 1 100 | xargs touch)
(cd "$src/large" && seq -f "name-of-some-length-%05g.py" 1 3000 | xargs touch)
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
at_exit unmount_all "$mnt"

# lookups_after DIR: list DIR, then stat each of its entries; print the lookups the stats cost.
lookups_after() {
	"${PY_ISOLATED[@]}" - "$mnt" "$1" "$PYFS_MOUNT" <<'PY'
import os, subprocess, sys
mnt, name, tool = sys.argv[1:4]
def lookups():
    out = subprocess.run([tool, "--stats", mnt], capture_output=True, check=True).stdout.decode()
    return int(next(l.split()[1] for l in out.splitlines() if l.startswith("lookups ")))
path = os.path.join(mnt, name)
names = os.listdir(path)
expected = sorted(os.listdir(os.path.join(sys.argv[1] + "/../src", name)))
if sorted(names) != expected:
    sys.exit(f"{name}: listing differs ({len(names)} vs {len(expected)} entries)")
before = lookups()
for n in names:
    os.stat(os.path.join(path, n))
print(lookups() - before)
PY
}

for opts in "" "-o readdirplus=yes" "-o readdirplus=no"; do
	# shellcheck disable=SC2086 # word splitting of $opts is wanted
	"$PYFS_MOUNT" $opts "$WORK/a.h5" "$mnt" || fail "mount ${opts:-default} failed"
	small=$(lookups_after small) || fail "${opts:-default}: small directory"
	large=$(lookups_after large) || fail "${opts:-default}: large directory"
	case $opts in
	*=no) [ "$small" -eq 100 ] || fail "readdirplus=no: $small lookups for 100 stats (expected 100)" ;;
	*) [ "$small" -eq 0 ] || fail "${opts:-default}: the listing of 100 entries brought no attributes: $small lookups" ;;
	esac
	[ "$large" -eq 3000 ] || fail "${opts:-default}: $large lookups after listing 3000 entries (expected 3000: no attributes for large directories)"
	# shellcheck disable=SC2012 # counting the lines of ls -l is the point: it stats every entry
	ls -l "$mnt/large" | tail -n +2 | wc -l | grep -qx 3000 || fail "${opts:-default}: ls -l of the large directory is short"
	note "${opts:-default}: stats after listing: small directory $small lookups, large $large"
	fusermount3 -u "$mnt"
done
