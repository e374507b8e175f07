"""make_seeds.py - fuzz seeds from real pyfs archives (made by pyfs-pack).

Usage: /usr/bin/python3.11 -s -S -P make_seeds.py IMAGE_DIR ARCHIVE_DIR ARCHIVE...

For each ARCHIVE, IMAGE_DIR gets the serialized parts that fuzz_image.c reads (see its
header comment): one seed with every checksum and nlink fixed up by the harness, one with the
harness fixing only the metadata checksum, one with the archive's own checksums and
no fix-up (flags 0), so every mode starts from valid input. A compressed archive
(pyfs-pack -z, format version 2) also carries its block section (FUZZ_BLOCKS), with
and without the harness fixing the block checksums.
ARCHIVE_DIR gets the same archive rewritten compactly for fuzz_archive.c (no 1 MiB
payload alignment, so the seed is a few KiB instead of MiB of zero padding), once in
the writer's HDF5 format (libver 1.8: superblock 2 and object headers 2, all with
checksums, which random mutations rarely get past) and once in the earliest format
(superblock 0, object headers 1, a symbol-table group: no checksums at all), which the
reader must refuse before HDF5 parses it (HDF5 1.10.8 crashes on some damaged ones).
"""
import os
import struct
import sys

sys.path.append("/usr/lib/python3/dist-packages")
import h5py  # noqa: E402
import numpy as np  # noqa: E402

FIX_METADATA, FIX_PAYLOAD, FIX_FILES, FIX_NLINK, BLOCKS, FIX_BLOCKS = 1, 2, 4, 8, 16, 32
KEYS = ("inodes", "dirents", "names", "payload")


def read_parts(path):
    with h5py.File(path, "r") as f:
        keys = KEYS + (("blocks",) if "blocks" in f else ())
        parts = {k: f[k][()] for k in keys}
        attrs = {k: f.attrs[k] for k in f.attrs}
        dtypes = {k: f[k].dtype for k in keys if k not in ("names", "payload")}
    return parts, attrs, dtypes


def image_seed(parts, attrs, flags):
    inodes, dirents = parts["inodes"], parts["dirents"]
    names, payload = parts["names"].tobytes(), parts["payload"].tobytes()
    head = struct.pack("<BIIIIQQ", flags, len(inodes), len(dirents), len(names), len(payload),
                       int(attrs["metadata_checksum"]), int(attrs["payload_checksum"]))
    seed = head + inodes.tobytes() + dirents.tobytes() + names + payload
    if flags & BLOCKS:
        blocks = parts["blocks"]
        seed += struct.pack("<III", int(attrs["block_size"]), len(blocks), int(attrs["raw_size"]))
        seed += blocks.tobytes()
    return seed


def compact_archive(parts, attrs, dtypes, out, libver):
    with h5py.File(out, "w", libver=libver, track_order=False) as f:
        for key in ("payload", "inodes", "dirents", "names", "blocks"):
            if key not in parts:
                continue
            data = parts[key]
            if key in dtypes:
                data = data.astype(dtypes[key])
            f.create_dataset(key, data=data, track_times=False)
        f.attrs.create("format", np.bytes_(attrs["format"]))
        f.attrs.create("version", np.uint32(attrs["version"]))
        f.attrs.create("payload_checksum", np.uint64(attrs["payload_checksum"]))
        f.attrs.create("metadata_checksum", np.uint64(attrs["metadata_checksum"]))
        if "blocks" in parts:
            f.attrs.create("block_size", np.uint32(attrs["block_size"]))
            f.attrs.create("raw_size", np.uint64(attrs["raw_size"]))


def main():
    image_dir, archive_dir, archives = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(archive_dir, exist_ok=True)
    for path in archives:
        stem = os.path.splitext(os.path.basename(path))[0]
        parts, attrs, dtypes = read_parts(path)
        modes = [FIX_METADATA | FIX_PAYLOAD | FIX_FILES | FIX_NLINK, FIX_METADATA, 0]
        if "blocks" in parts:
            modes = [m | BLOCKS for m in modes] + [FIX_METADATA | FIX_BLOCKS | BLOCKS]
        for flags in modes:
            with open(os.path.join(image_dir, f"{stem}-{flags}.bin"), "wb") as out:
                out.write(image_seed(parts, attrs, flags))
        for low, high in (("earliest", "v108"), ("v108", "v108")):
            compact_archive(parts, attrs, dtypes, os.path.join(archive_dir, f"{stem}-{low}.h5"),
                            (low, high))


main()
