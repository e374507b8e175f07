#!/bin/bash
# pyfs-pack is deterministic: packing the same tree twice gives byte-identical
# archives, with byte-code compiled on the way (Python modules without .pyc)
# and without, and so does packing a copy of the tree (same names, contents,
# modes and mtimes) from another place.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"

SRC=$WORK/src
mkdir -p "$SRC/mods" "$SRC/data"
# Real modules to compile, copied with their mtimes but not their byte-code.
for m in argparse ast dataclasses enum functools json/decoder json/encoder pathlib \
	pickle typing zipfile/__init__; do
	[ -f "/usr/lib/python3.11/$m.py" ] || continue
	cp -p "/usr/lib/python3.11/$m.py" "$SRC/mods/$(echo "$m" | tr / _).py"
done
# shellcheck disable=SC2012 # plain names here
[ "$(ls "$SRC/mods" | wc -l)" -ge 5 ] || skip "too few stdlib modules found to compile"
head -c 300000 /dev/urandom >"$SRC/data/random"
cp -p "$SRC/data/random" "$SRC/data/random-copy"
ln "$SRC/data/random" "$SRC/data/random-link"
ln -s ../mods "$SRC/data/mods-link"
mkdir "$SRC/empty"
touch -d '2001-02-03 04:05:06.789' "$SRC/data" "$SRC/empty" "$SRC"

for i in 1 2; do
	"$PYFS_PACK" -q -p "$PY" "$WORK/c$i.h5" "$SRC" || fail "pack $i failed"
	"$PYFS_PACK" -q --no-compile "$WORK/n$i.h5" "$SRC" || fail "pack $i --no-compile failed"
done
cmp "$WORK/c1.h5" "$WORK/c2.h5" || fail "two packs with byte-code differ"
cmp "$WORK/n1.h5" "$WORK/n2.h5" || fail "two packs without byte-code differ"
! cmp -s "$WORK/c1.h5" "$WORK/n1.h5" || fail "byte-code did not change the archive"
# shellcheck disable=SC2012 # plain names here
[ "$("$PYFS_PACK" --list "$WORK/c1.h5" | grep -c '\.pyc$')" -eq "$(ls "$SRC/mods" | wc -l)" ] ||
	fail "not every module got byte-code"

cp -a "$SRC" "$WORK/copy"
"$PYFS_PACK" -q -p "$PY" "$WORK/c3.h5" "$WORK/copy" || fail "pack of the copy failed"
cmp "$WORK/c1.h5" "$WORK/c3.h5" || fail "the same tree packed from another place differs"
exit 0
