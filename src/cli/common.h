/* common.h - helpers shared by the commands: text -> token ids on rank 0, broadcast. */
#ifndef MF_CLI_COMMON_H
#define MF_CLI_COMMON_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include "backend/backend.h"
#include "io/source.h"
#include "model/model.h"

/* Rank 0 reads and tokenizes `text_path` with the model's tokenizer (no BOS)
 * and broadcasts the ids to every rank. Errors abort all ranks. */
int32_t *mf_cli_tokenize_file(const char *model_path, const char *tok_path, const char *text_path, size_t *n, MPI_Comm comm);

/* The identity of a run's training tokens, for checkpoints: "N tokens, fnv1a HEX"
 * (FNV-1a 64 of the ids), so --resume can refuse another text or tokenizer. */
void mf_cli_tokens_id(const int32_t *ids, size_t n, char *out, size_t cap);
/* For restartable runs: SIGTERM/SIGUSR1/SIGINT caught, then the tokens of text
 * (mf_cli_tokenize_file over MPI_COMM_WORLD) and their identity (id[64]). */
int32_t *mf_cli_training_tokens(const char *model, const char *tok, const char *text, size_t *n, char id[64]);

/* Write `bytes` to path atomically (temp name, then rename). */
int mf_write_atomic(const char *path, const void *data, size_t bytes, mf_err *err);

/* The backend named by --backend, or a one-line fatal error listing the names (cmd: "eval"). */
const mf_backend *mf_cli_backend(const char *cmd, const char *name);

/* --weights NAME (auto, bf16, f32), or a one-line fatal error naming the command and the value. */
mf_weights mf_cli_weights(const char *cmd, const char *name);

/* Command entry points. */
int mf_cmd_eval(int argc, char **argv);
int mf_cmd_logits(int argc, char **argv);
int mf_cmd_generate(int argc, char **argv);
int mf_cmd_score(int argc, char **argv);
int mf_cmd_prune(int argc, char **argv);
int mf_cmd_distill(int argc, char **argv);
int mf_cmd_fuse(int argc, char **argv);
int mf_cmd_plan(int argc, char **argv);

#endif
