#!/bin/bash
# The pyfs-mount commands the job scripts use instead of re-implementing them
# in shell: --expand (the rank from the launcher's variables), --status (none,
# live, stale), --clear-stale (refuses a live mount, clears a dead one),
# --mounts (pyfs mounts of a user), --daemons (the daemon of a mountpoint, not
# the commands themselves) and --info (bad archives fail with one line).
. "$(dirname "$0")/lib.sh"
need_fuse
M=$PYFS_MOUNT

[ "$(OMPI_COMM_WORLD_RANK=3 "$M" --expand /x/%r-%n-%%)" = "/x/3-3-%" ] || fail "--expand with a rank"
[ "$(env -u OMPI_COMM_WORLD_RANK SLURM_PROCID=5 "$M" --expand /x/%r)" = "/x/5" ] || fail "--expand under Slurm"
expect_fail "--expand of a bad '%'" "$M" --expand /x/%q
expect_message "invalid '%' sequence"
expect_fail "--expand without argument" "$M" --expand
expect_message "missing argument"

make_sample_tree "$WORK/tree"
"$PYFS_PACK" -q "$WORK/a.h5" "$WORK/tree" 2>/dev/null || fail "pack failed"
mkdir "$WORK/mnt" "$WORK/other"
at_exit unmount_all "$WORK/mnt"
[ "$("$M" --status "$WORK/mnt")" = none ] || fail "--status of a plain directory"
"$M" --clear-stale "$WORK/mnt" || fail "--clear-stale of a plain directory"

("$M" -f --ready-file="$WORK/ready" "$WORK/a.h5" "$WORK/mnt" &)
wait_until 30 test -s "$WORK/ready" || fail "the mount did not become ready"
pid=$(cat "$WORK/ready")
[ "$("$M" --status "$WORK/mnt")" = live ] || fail "--status of a live mount"
"$M" --mounts --uid "$(id -u)" | grep -qxF "$WORK/mnt" || fail "--mounts does not list the mount"
! "$M" --mounts --uid 4242424 | grep -qxF "$WORK/mnt" || fail "--mounts lists it for another user"
got=$("$M" --daemons "$WORK/mnt")
[ "$got" = "$pid" ] || fail "--daemons '$WORK/mnt' gave '$got', not $pid"
[ -z "$("$M" --daemons "$WORK/other")" ] || fail "--daemons of another directory found one"
expect_fail "--clear-stale of a live mount" "$M" --clear-stale "$WORK/mnt"
expect_message "is already a mount"
[ -f "$WORK/mnt/a/hello.txt" ] || fail "--clear-stale broke the live mount"

kill -KILL "$pid"
wait_until 10 sh -c "! kill -0 $pid 2>/dev/null" || fail "the daemon did not die"
[ "$("$M" --status "$WORK/mnt")" = stale ] || fail "--status of a dead mount: $("$M" --status "$WORK/mnt")"
"$M" --clear-stale "$WORK/mnt" 2>"$WORK/clear.err" || fail "--clear-stale failed: $(cat "$WORK/clear.err")"
[ "$("$M" --status "$WORK/mnt")" = none ] || fail "--clear-stale left a mount"

[ "$("$M" --info "$WORK/a.h5")" = "bin=no" ] || fail "--info of a plain tree: $("$M" --info "$WORK/a.h5")"
echo junk >"$WORK/junk.h5"
expect_fail "--info of a non-archive" "$M" --info "$WORK/junk.h5"
expect_message "'$WORK/junk.h5' is not an HDF5 file"
[ "$(wc -l <"$WORK/last.err")" = 1 ] || fail "--info error is not one line: $(cat "$WORK/last.err")"
exit 0
