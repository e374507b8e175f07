#!/bin/bash
# pyfs-pack on a full file system: one line naming the archive (never its
# temporary file) and "No space left on device", exit 1, nothing left behind;
# once when the payload does not fit, once when the payload fits and the
# metadata written after it does not. Small tmpfs mounts (needs root).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "mounting a small tmpfs needs root"

SRC=$WORK/src FULL=$WORK/full
mkdir -p "$SRC/many" "$FULL"
# 2 MB of payload, then 30,000 empty files: about 2.7 MB of metadata.
head -c 2000000 /dev/urandom >"$SRC/big"
(cd "$SRC/many" && seq 1 30000 | xargs touch)
"$PYFS_PACK" -q --no-compile "$WORK/whole.h5" "$SRC"
size=$(stat -c %s "$WORK/whole.h5")
[ "$size" -gt 4000000 ] || fail "the archive is $size bytes: the metadata case needs more than 4 MB"

# full_pack KIB WHAT: pack into a tmpfs of KIB KiB, expect the one-line failure.
full_pack() {
	local kib=$1 what=$2 lines
	mount -t tmpfs -o "size=${kib}k,mode=0755" tmpfs "$FULL" || skip "cannot mount a tmpfs here"
	at_exit "umount '$FULL' 2>/dev/null"
	expect_fail "$what" "$PYFS_PACK" --no-compile "$FULL/env.h5" "$SRC"
	expect_message "cannot write archive '$FULL/env.h5': No space left on device"
	lines=$(wc -l <"$WORK/last.err")
	[ "$lines" -eq 1 ] || fail "$what: $lines lines instead of one: $(head -c 600 "$WORK/last.err")"
	! grep -q "tmp\.\|0x" "$WORK/last.err" || fail "$what: message names the temporary file or an address: $(cat "$WORK/last.err")"
	[ -z "$(ls -A "$FULL")" ] || fail "$what: left behind: $(ls -A "$FULL")"
	umount "$FULL"
}

full_pack 1024 "payload does not fit"
full_pack 3072 "payload fits, metadata does not"
note "ok: both out-of-space cases give one line naming the archive"
