#!/usr/bin/env python3
"""rankings_h5py.py - an independent (h5py + numpy) implementation of the
rankings schema (docs/rankings_schema.md), used two ways:

  python3 tests/rankings_h5py.py write OUT.h5   (run by hand) writes the golden
      tests/golden/rankings/h5py_tiny.h5 that the C reader must accept: the
      newest HDF5 format that HDF5 1.10 reads (libver v110: superblock 3,
      checksummed metadata), fixed-length string attributes and Fletcher-32 on
      every dataset, as minifuse writes them (docs/rankings_schema.md);
  python3 tests/rankings_h5py.py check FILE.h5  (run by tests/test_rankings.c)
      checks a file written by the C writer, prints "OK ..." or fails.

Both use the synthetic scores of tests/rankings_synth.h:
  width (layer l, metric k, index i) = ((l*7919 + k*104729 + i*31) % 10007 - 5000) / 3
  bi[l] = synth(l, 4, 0); ppl[l] = 10 + (l*37 % 5) / 4; ppl_full = 9.5
  mi[t][l] = synth(l, 6, t), NaN where l was removed before t; removal order 5, 0, 3
"""
import sys

import h5py
import numpy as np

L, HIDDEN, FFN, HEADS, KV, HEAD_DIM, VOCAB = 7, 48, 128, 6, 2, 8, 1000
MI_ORDER = [5, 0, 3]
WIDTH = ["mlp_neurons", "attn_heads", "emb_attn_norm", "emb_mlp_norm"]
LENS = [FFN, HEADS, HIDDEN, HIDDEN]


def synth(l, k, i):
    i = np.asarray(i, dtype=np.int64)
    return ((l * 7919 + k * 104729 + i * 31) % 10007 - 5000) / 3.0


def expected():
    width = {(l, k): synth(l, k, np.arange(LENS[k])) for l in range(L) for k in range(4)}
    bi = np.array([synth(l, 4, 0) for l in range(L)], dtype=np.float64)
    ppl = np.array([10 + (l * 37 % 5) / 4.0 for l in range(L)])
    mi = np.array([[synth(l, 6, t) for l in range(L)] for t in range(len(MI_ORDER))], dtype=np.float64)
    for t in range(len(MI_ORDER)):
        mi[t, MI_ORDER[:t]] = np.nan
    emb = sum(width[(l, 2)] + width[(l, 3)] for l in range(L))
    return width, bi, ppl, mi, emb


def text(v):
    """An attribute string as str: minifuse writes fixed-length strings, which h5py gives as bytes."""
    return v.decode() if isinstance(v, bytes) else str(v)


def write(path):
    width, bi, ppl, mi, emb = expected()
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        a = f.attrs
        s = np.bytes_  # fixed-length strings: variable-length ones live in the unchecksummed global heap
        a["format"] = s("minifuse-rankings")
        a["format_version"] = 1
        a["software_version"] = s("h5py-golden")
        a["created"] = s("2025-01-01T00:00:00Z")
        a["model_path"] = s("synthetic/model")
        a["model_sha256"] = s("ab" * 32)
        a["data_path"] = s("synthetic/data.txt")
        a["data_sha256"] = s("")
        a["options"] = s('{"ctx": 64}')
        a["n_tokens"], a["n_samples"], a["ctx"] = 256, 4, 64  # int64 (h5py's default)
        a["n_layers"], a["hidden_size"], a["intermediate_size"] = L, HIDDEN, FFN
        a["num_attention_heads"], a["num_key_value_heads"] = HEADS, KV
        a["head_dim"], a["vocab_size"] = HEAD_DIM, VOCAB
        a["metrics"] = s(",".join(WIDTH + ["bi", "ppl", "mi", "some_future_metric"]))
        ds = lambda name, data, **kw: f.create_dataset(name, data=data, fletcher32=True, **kw)
        for l in range(L):
            for k in range(4):
                ds(f"layers/{l:02d}/{WIDTH[k]}", width[(l, k)])
        ds("depth/bi", bi)
        ds("depth/ppl", ppl)
        f["depth/ppl"].attrs["ppl_full"] = 9.5
        ds("depth/mi", mi, compression="gzip", shuffle=True)  # more filters than minifuse writes
        ds("width/emb", emb)
        ds("orders/bi", np.argsort(bi, kind="stable"))  # int64 on purpose
        ds("orders/ppl", np.argsort(ppl, kind="stable").astype(np.int32))
        ds("orders/mi", np.array(MI_ORDER, dtype=np.int32))


def check(path):
    width, bi, ppl, mi, emb = expected()
    with h5py.File(path, "r") as f:
        a = f.attrs
        assert text(a["format"]) == "minifuse-rankings", a["format"]
        assert int(a["format_version"]) == 1
        got = [int(a[k]) for k in ("n_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                   "num_key_value_heads", "head_dim", "vocab_size")]
        assert got == [L, HIDDEN, FFN, HEADS, KV, HEAD_DIM, VOCAB], got
        assert text(a["metrics"]) == ",".join(WIDTH + ["bi", "ppl", "mi"]), a["metrics"]
        assert int(a["n_tokens"]) == 256 and int(a["n_samples"]) == 4 and int(a["ctx"]) == 64
        assert text(a["model_path"]) == "synthetic/model" and text(a["options"]) == '{"ctx": 64, "n_samples": 4}'
        assert sorted(f["layers"]) == [f"{l:02d}" for l in range(L)]
        for (l, k), v in width.items():
            d = f[f"layers/{l:02d}/{WIDTH[k]}"]
            assert d.dtype == np.float64 and np.array_equal(d[()], v), (l, WIDTH[k])
            assert d.fletcher32, (l, WIDTH[k])
        assert np.array_equal(f["depth/bi"][()], bi)
        assert np.array_equal(f["depth/ppl"][()], ppl) and f["depth/ppl"].attrs["ppl_full"] == 9.5
        assert np.array_equal(f["depth/mi"][()], mi, equal_nan=True)
        assert np.allclose(f["width/emb"][()], emb, rtol=1e-12, atol=0)
        assert np.array_equal(f["orders/bi"][()], np.argsort(bi, kind="stable"))
        assert np.array_equal(f["orders/ppl"][()], np.argsort(ppl, kind="stable"))
        assert np.array_equal(f["orders/mi"][()], MI_ORDER)
        assert f["orders/bi"].dtype == np.int32
        print(f"OK layers={len(f['layers'])} emb0={f['width/emb'][0]!r} sha={text(a['model_sha256'])}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
