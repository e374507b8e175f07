#!/bin/bash
# pyfs-pack -z of a file larger than 4 GiB: 32 Ki+ blocks, 64-bit raw offsets
# end to end. The source is sparse with data at a few offsets (the first and
# last bytes included); the archive holds a few MiB. --list shows the size,
# the mount serves the markers at their offsets (reads decompress the blocks
# around them) and --extract gives back the same file. Skipped when the disk
# has less than 12 GiB free.
. "$(dirname "$0")/lib.sh"
need_fuse

free=$(free_disk_gib "$WORK")
[ "$free" -ge 12 ] || skip "needs 12 GiB free in $WORK, has $free GiB"

SRC=$WORK/src
mkdir "$SRC"
size=$(((4 << 30) + 12345))
offsets=(0 $((1 << 30)) $(((4 << 30) - 3)) $((size - 7)))
truncate -s "$size" "$SRC/big"
for offset in "${offsets[@]}"; do
	printf 'pyfs@%s' "$offset" | dd of="$SRC/big" bs=1 seek="$offset" conv=notrunc status=none
done
truncate -s "$size" "$SRC/big"
echo small >"$SRC/small"
touch -d '2024-02-29 12:34:56.987654321' "$SRC/big"

"$PYFS_PACK" -q --no-compile -z "$WORK/big.h5" "$SRC" || fail "pack -z failed"
stored=$(stat -c %s "$WORK/big.h5")
[ "$stored" -lt $((64 << 20)) ] || fail "the compressed archive has $stored bytes"
"$PYFS_PACK" --list "$WORK/big.h5" | grep -qE "^-rw-r--r-- +1 +$size .* big$" ||
	fail "--list does not show big with $size bytes"

mnt=$WORK/mnt
mkdir "$mnt"
at_exit unmount_all "$mnt"
"$PYFS_MOUNT" "$WORK/big.h5" "$mnt" || fail "pyfs-mount failed"
[ "$(stat -c %s "$mnt/big")" = "$size" ] || fail "size on the mount: $(stat -c %s "$mnt/big")"
for offset in "${offsets[@]}"; do
	marker="pyfs@$offset"
	got=$(dd if="$mnt/big" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count=${#marker} status=none)
	want=$(dd if="$SRC/big" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count=${#marker} status=none)
	[ "$got" = "$want" ] || fail "at $offset the mount has '$got', the source '$want'"
done
dd if="$mnt/big" bs=1M skip=2047 count=2 status=none | cmp - <(dd if="$SRC/big" bs=1M skip=2047 count=2 status=none) ||
	fail "2 MiB across the 2 GiB boundary differ"
cmp "$SRC/small" "$mnt/small" || fail "small differs on the mount"
unmount_all "$mnt"

"$PYFS_PACK" --extract "$WORK/big.h5" "$WORK/out" || fail "extract failed"
cmp "$SRC/big" "$WORK/out/big" || fail "big file differs after extract"
[ "$(stat -c '%s %a %y' "$SRC/big")" = "$(stat -c '%s %a %y' "$WORK/out/big")" ] ||
	fail "size, mode or mtime differ: $(stat -c '%s %a %y' "$SRC/big" "$WORK/out/big")"
exit 0
