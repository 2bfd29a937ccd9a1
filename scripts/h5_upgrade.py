#!/usr/bin/env python3
"""h5_upgrade.py IN.h5 OUT.h5 - rewrite an HDF5 file that an older minifuse
wrote (rankings, training checkpoint) in the layout this minifuse reads:

  * HDF5's newest format that HDF5 1.10 reads (superblock 3, checksummed metadata);
  * string attributes as fixed-length UTF-8 strings (no global heap);
  * every dataset chunked with a Fletcher-32 checksum.

Values, names, attributes and dtypes are copied unchanged (docs/promises.md).
A teacher top-K cache need not be upgraded: minifuse rebuilds it."""
import sys

import h5py
import numpy as np


def attr_value(v):
    if isinstance(v, str):
        return np.array(v.encode("utf-8"), dtype=h5py.string_dtype("utf-8", len(v.encode("utf-8")) + 1))
    if isinstance(v, bytes):
        return np.bytes_(v)
    return v


def copy_attrs(src, dst):
    for k, v in src.attrs.items():
        dst.attrs[k] = attr_value(v)


def copy(src, dst):
    copy_attrs(src, dst)
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            copy(obj, dst.create_group(name, track_order=False))
        else:
            data = obj[()]
            kw = {"fletcher32": True} if obj.shape and obj.size else {}
            d = dst.create_dataset(name, data=data, dtype=obj.dtype, track_times=False, **kw)
            copy_attrs(obj, d)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with h5py.File(sys.argv[1], "r") as src, h5py.File(sys.argv[2], "w", libver=("v110", "v110")) as dst:
        copy(src, dst)


if __name__ == "__main__":
    main()
