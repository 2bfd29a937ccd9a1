/* hf_collective.h - write one Hugging Face model directory from all pipeline ranks.
 *
 * Every rank passes the tensors it holds (in the output's names); each rank
 * with tensors writes its own safetensors shard(s) (at most 4 GiB each, numbered
 * in rank order), rank 0 writes the index and
 * config.json, all into OUT.tmp.<host>.<pid>.<random>, renamed to OUT when
 * complete. Rank 0 holds OUT.lock while it writes (a second writer of OUT is
 * refused, naming the holder), removes what dead writers left next to OUT, and
 * puts the tokenizer that extra_json names ("minifuse": {"tokenizer": path})
 * into OUT (tokenizer.bin, or tokenizer.gguf: the GGUF's tokenizer keys only),
 * named relative to it. --force replaces OUT without a shell (nftw). Used by
 * prune, distill and fuse. Errors abort all ranks. */
#ifndef MF_HF_COLLECTIVE_H
#define MF_HF_COLLECTIVE_H

#include <mpi.h>
#include "io/hf_write.h"

/* Largest safetensors shard a rank writes (transformers' default is 5 GB). */
#define MF_MAX_SHARD_BYTES ((size_t)4 << 30)

/* force: replace an existing OUT (else it must not exist). extra_json: merged into config.json. */
void mf_hf_write_collective(const char *out, MPI_Comm comm, const mf_config *cfg, const mf_tensor_ref *t, int n,
                            const char *extra_json, int force, const char *who);

#endif
