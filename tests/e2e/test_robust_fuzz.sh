#!/bin/bash
# Fuzzing with libFuzzer: builds tests/fuzz/fuzz_image.c (validation and every accessor
# of the in-RAM image) and tests/fuzz/fuzz_archive.c (pyfs_archive_load: HDF5's parser,
# the reader's checks, validation) with clang -fsanitize=fuzzer,address,undefined,
# replays every regression input of tests/fuzz/regressions/, then fuzzes each target
# for PYFS_FUZZ_SECONDS seconds (default 30), seeded with archives that pyfs-pack makes
# of small trees. Any crash, sanitizer report, broken promise (abort), timeout or
# out-of-memory fails the test; the input is kept in $PYFS_BUILD_DIR/fuzz/artifacts and
# belongs in tests/fuzz/regressions/TARGET/ once fixed. The corpus grows across runs in
# $PYFS_BUILD_DIR/fuzz/corpus. Long run: PYFS_FUZZ_SECONDS=3600 ctest -R robust_fuzz.
. "$(dirname "$0")/lib.sh"

CLANG=$(command -v clang-14 || command -v clang || true)
[ -n "$CLANG" ] || skip "clang is missing (apt-get install clang-14 libclang-rt-14-dev)"
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' >"$WORK/probe.c"
"$CLANG" -fsanitize=fuzzer "$WORK/probe.c" -o "$WORK/probe" 2>/dev/null ||
	skip "$CLANG cannot link libFuzzer (apt-get install libclang-rt-14-dev)"
pkg-config --exists hdf5-openmpi || skip "pkg-config does not know hdf5-openmpi (apt-get install libhdf5-openmpi-dev)"
[ -x "$PYFS_PACK" ] || fail "no pyfs-pack at $PYFS_PACK"

seconds=${PYFS_FUZZ_SECONDS:-30}
src=$PYFS_SOURCE_DIR
fuzz=$PYFS_BUILD_DIR/fuzz
mkdir -p "$fuzz/corpus/image" "$fuzz/corpus/archive" "$fuzz/artifacts"

# Build both targets (a few seconds each).
# shellcheck disable=SC2054 # the commas belong to -fsanitize=
flags=(-g -O1 -std=gnu17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -fno-omit-frame-pointer
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror
	-I"$src/archive")
read -r -a h5_cflags <<<"$(pkg-config --cflags hdf5-openmpi)"
read -r -a h5_libs <<<"$(pkg-config --libs hdf5-openmpi)"
"$CLANG" "${flags[@]}" "$src/tests/fuzz/fuzz_image.c" "$src/archive/image.c" \
	"$src/archive/log.c" -lxxhash -lzstd -o "$WORK/fuzz_image" 2>"$WORK/build.err" ||
	fail "cannot build fuzz_image: $(head -c 1500 "$WORK/build.err")"
"$CLANG" "${flags[@]}" "${h5_cflags[@]}" "$src/tests/fuzz/fuzz_archive.c" \
	"$src/archive/archive_io.c" "$src/archive/stream.c" "$src/archive/image.c" "$src/archive/log.c" \
	"${h5_libs[@]}" -lxxhash -lzstd -o "$WORK/fuzz_archive" 2>"$WORK/build.err" ||
	fail "cannot build fuzz_archive: $(head -c 1500 "$WORK/build.err")"

# Seeds: small trees with every kind of entry, odd names, a long path, depth, and nothing.
t=$WORK/trees
mkdir -p "$t/names" "$t/deep" "$t/empty"
make_sample_tree "$t/sample"
printf 'x = 1\n' >"$t/sample/a/b/mod.py"
touch -d '2001-02-03 04:05:06.123456789' "$t/sample/a/hello.txt"
for n in 'with space' $'new\nline' $'bad\xff\xfeutf8' '...' '.hidden' a $'a\x01' ab b \
	"$(printf 'L%.0s' $(seq 255))" 'é-ü'; do
	printf '%s' "$n" >"$t/names/$n"
done
long=$t/names/$(printf 'm%.0s' $(seq 200))
mkdir -p "$long/$(printf 'n%.0s' $(seq 200))"
echo "at the end of a long path" >"$long/$(printf 'n%.0s' $(seq 200))/$(printf 'o%.0s' $(seq 200))"
d=$t/deep
for i in $(seq 12); do
	d=$d/d$i
	mkdir "$d"
	echo "$i" >"$d/f$i"
done
for i in $(seq 40); do echo "$i" >"$t/deep/many$i"; done
archives=()
for tree in sample names deep empty; do
	"$PYFS_PACK" -q --no-compile "$WORK/$tree.h5" "$t/$tree" || fail "cannot pack the $tree tree"
	archives+=("$WORK/$tree.h5")
done
# Compressed (format version 2): the block index and the decoder, small blocks so
# that the seeds hold several.
printf 'import numpy as np  # %.0s\n' $(seq 3000) >"$t/sample/text.py"
"$PYFS_PACK" -q --no-compile -z --block-size=4K "$WORK/sample-z.h5" "$t/sample" ||
	fail "cannot pack the sample tree with -z"
archives+=("$WORK/sample-z.h5")
# Hand-made hostile archives (tests/robust/craft.py: a cycle, a directory hard link, names
# that escape...) start the image fuzzer next to the rules it must keep.
crafted=(valid dotdot slash duplicate unsorted cycle dir-hard-link root-named file-as-parent
	file-with-entries symlink-out)
"${PY_ISOLATED[@]}" "$src/tests/robust/craft.py" "$WORK/crafted" "${crafted[@]}" ||
	fail "cannot craft archives"
for c in "${crafted[@]}"; do archives+=("$WORK/crafted/$c.h5"); done
"${PY_ISOLATED[@]}" "$src/tests/fuzz/make_seeds.py" "$WORK/seeds/image" "$WORK/seeds/archive" \
	"${archives[@]}" || fail "cannot make seeds"

export ASAN_OPTIONS=abort_on_error=0:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$src/tests/robust/lsan-hdf5.supp:print_suppressions=0
export TMPDIR=$WORK
libfuzzer_opts=(-error_exitcode=1 -timeout_exitcode=1 -timeout=10 -rss_limit_mb=2048
	-print_final_stats=1 -artifact_prefix="$fuzz/artifacts/")

# replay TARGET: every regression input once.
replay() {
	local dir=$src/tests/fuzz/regressions/$1 inputs
	mapfile -t inputs < <(find "$dir" -type f ! -name '*.md' 2>/dev/null | sort)
	[ ${#inputs[@]} -gt 0 ] || return 0
	"$WORK/fuzz_$1" "${libfuzzer_opts[@]}" "${inputs[@]}" >"$WORK/replay-$1.log" 2>&1 ||
		fail "fuzz_$1 fails on a regression input: $(grep -E '^Running:' "$WORK/replay-$1.log" | tail -1): $(grep -m1 -E 'ERROR:|broken promise' "$WORK/replay-$1.log") $(grep -m4 -E '^ +#[0-9]+ ' "$WORK/replay-$1.log" | sed 's/(.*//' | tr -s ' \n' ' ')"
	note "fuzz_$1: ${#inputs[@]} regression inputs replayed"
}

# run TARGET MAX_LEN: fuzz for $seconds; fail on any finding; report the figures.
run() {
	local target=$1 log=$WORK/fuzz-$1.log rc=0
	"$WORK/fuzz_$target" "${libfuzzer_opts[@]}" -max_total_time="$seconds" -max_len="$2" \
		"$fuzz/corpus/$target" "$WORK/seeds/$target" >"$log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ] || grep -qE '^==[0-9]+==ERROR|broken promise|runtime error' "$log"; then
		fail "fuzz_$target found a crash (exit $rc): $(grep -m3 -E 'ERROR|broken promise|runtime error|Test unit written' "$log" | tr '\n' ' ') -- log tail: $(tail -c 2000 "$log")"
	fi
	local execs rate cov
	execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
	rate=$(awk '/stat::average_exec_per_sec/ { print $NF }' "$log")
	cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
	[ -n "$execs" ] && [ "$execs" -gt 0 ] || fail "fuzz_$target did not run: $(tail -c 1000 "$log")"
	note "fuzz_$target: $execs executions in ${seconds}s ($rate/s), $cov, no crash"
}

replay image
replay archive
run image 16384
run archive 65536
exit 0
