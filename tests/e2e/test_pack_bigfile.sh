#!/bin/bash
# pyfs-pack round trip of a file larger than 4 GiB (64-bit sizes and offsets
# end to end; takes about half a minute). The source is sparse with data at a few offsets, the first and
# last bytes included; the packer leaves zero blocks as holes, so neither the
# archive nor the extracted copy takes 4 GiB of disk. Skipped when the disk
# has less than 12 GiB free.
. "$(dirname "$0")/lib.sh"

free=$(free_disk_gib "$WORK")
[ "$free" -ge 12 ] || skip "needs 12 GiB free in $WORK, has $free GiB"

SRC=$WORK/src
mkdir "$SRC"
size=$(((4 << 30) + 12345))
truncate -s "$size" "$SRC/big"
for offset in 0 $((1 << 30)) $(((4 << 30) - 3)) $((size - 7)); do
	printf 'pyfs@%s' "$offset" | dd of="$SRC/big" bs=1 seek="$offset" conv=notrunc status=none
done
truncate -s "$size" "$SRC/big" # the last write may have run past the end
echo small >"$SRC/small"
touch -d '2024-02-29 12:34:56.987654321' "$SRC/big"

"$PYFS_PACK" -q --no-compile "$WORK/big.h5" "$SRC" || fail "pack failed"
at_exit rm -f "$WORK/big.h5"
used=$(du -k "$WORK/big.h5" | cut -f1)
[ "$used" -lt $((64 << 10)) ] || note "archive takes $used KiB on disk (holes not kept by this file system)"

"$PYFS_PACK" --list "$WORK/big.h5" | grep -qE "^-rw-r--r-- +1 +$size .* big$" ||
	fail "--list does not show big with $size bytes"
# --extract verifies every checksum first, as --verify does.
"$PYFS_PACK" --extract "$WORK/big.h5" "$WORK/out" || fail "extract failed"
rm -f "$WORK/big.h5"
cmp "$SRC/big" "$WORK/out/big" || fail "big file differs after extract"
for f in big small; do
	[ "$(stat -c '%s %a %y' "$SRC/$f")" = "$(stat -c '%s %a %y' "$WORK/out/$f")" ] ||
		fail "$f: size, mode or mtime differ: $(stat -c '%s %a %y' "$SRC/$f" "$WORK/out/$f")"
done
cmp "$SRC/small" "$WORK/out/small" || fail "small file differs after extract"
exit 0
