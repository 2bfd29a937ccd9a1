/* test_badinput.c - malformed model files and bad options: a clear one-line
 * error naming the file/tensor/option, a non-zero exit, no crash, no output. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/source.h"
#include "model/model.h"
#include "testutil.h"

#define HF_DIR "llm_assets/models/stories260K_hf"

/* Copy the stories260K HF model into a temp dir, optionally replacing
 * config.json text and/or the safetensors header (JSON). */
static const char *make_hf(const char *config, json_t *header) {
    const char *dir = tu_tmpdir();
    char p[4300];
    size_t len;
    char *cfg = config ? strdup(config) : tu_read(tu_shared(HF_DIR "/config.json"), &len);
    snprintf(p, sizeof p, "%s/config.json", dir);
    tu_write(p, cfg, strlen(cfg));
    free(cfg);
    unsigned char *st = tu_read(tu_shared(HF_DIR "/model.safetensors"), &len);
    cr_assert(st);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | st[i];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    if (header) {
        char *h = json_dumps(header, JSON_COMPACT);
        uint64_t n = strlen(h);
        unsigned char le[8];
        for (int i = 0; i < 8; i++) le[i] = (unsigned char)(n >> (8 * i));
        fwrite(le, 1, 8, f);
        fwrite(h, 1, n, f);
        free(h);
        fwrite(st + 8 + hlen, 1, len - 8 - hlen, f);
    } else fwrite(st, 1, len, f);
    fclose(f);
    free(st);
    return dir;
}

static json_t *real_header(void) {
    size_t len;
    unsigned char *st = tu_read(tu_shared(HF_DIR "/model.safetensors"), &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | st[i];
    json_t *h = json_loadb((char *)st + 8, hlen, 0, NULL);
    free(st);
    cr_assert(h);
    return h;
}

/* Open + load the whole model; expect failure with all `needles` in the message. */
static void expect_load_error(const char *path, const char *n1, const char *n2) {
    mf_err err = {{0}};
    mf_source *s = mf_source_open(path, &err);
    mf_model *m = NULL;
    if (s) {
        m = mf_model_load(s, mf_backend_cpu(), 0, s->cfg.n_layers, 1, 1, &err);
        mf_model_free(m);
        mf_source_close(s);
    }
    cr_assert(!s || !m, "%s loaded but should fail", path);
    cr_expect(strstr(err.msg, n1), "message '%s' lacks '%s'", err.msg, n1);
    if (n2) cr_expect(strstr(err.msg, n2), "message '%s' lacks '%s'", err.msg, n2);
    cr_expect(!strchr(err.msg, '\n'), "message must be one line: '%s'", err.msg);
}

Test(badinput, hf_bad_config_json) { expect_load_error(make_hf("{\"hidden_size\": 64,", NULL), "config.json", "bad JSON"); }

Test(badinput, hf_unknown_architecture) {
    expect_load_error(make_hf("{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}", NULL), "config.json", "GPT2LMHeadModel");
}

Test(badinput, hf_missing_field) {
    expect_load_error(make_hf("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 5, "
                              "\"num_attention_heads\": 8, \"vocab_size\": 512}", NULL), "intermediate_size", NULL);
}

Test(badinput, hf_wrong_type_field) {
    expect_load_error(make_hf("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\"}", NULL), "hidden_size", "integer");
}

Test(badinput, st_missing_tensor) {
    json_t *h = real_header();
    json_object_del(h, "model.layers.3.mlp.up_proj.weight");
    expect_load_error(make_hf(NULL, h), "missing tensor", "model.layers.3.mlp.up_proj.weight");
    json_decref(h);
}

Test(badinput, st_unknown_dtype) {
    json_t *h = real_header();
    json_object_set_new(json_object_get(h, "model.norm.weight"), "dtype", json_string("F12"));
    expect_load_error(make_hf(NULL, h), "unknown dtype 'F12'", "model.norm.weight");
    json_decref(h);
}

Test(badinput, st_offsets_past_end) {
    json_t *h = real_header();
    json_t *off = json_object_get(json_object_get(h, "model.norm.weight"), "data_offsets");
    json_array_set_new(off, 1, json_integer(1 << 30));
    expect_load_error(make_hf(NULL, h), "model.norm.weight", "past the end");
    json_decref(h);
}

Test(badinput, st_shape_vs_bytes) {
    json_t *h = real_header();
    json_t *shape = json_object_get(json_object_get(h, "model.norm.weight"), "shape");
    json_array_set_new(shape, 0, json_integer(65));
    expect_load_error(make_hf(NULL, h), "model.norm.weight", "need");
    json_decref(h);
}

Test(badinput, config_vs_tensor_shape) {
    size_t len;
    char *cfg = tu_read(tu_shared(HF_DIR "/config.json"), &len);
    char *p = strstr(cfg, "\"intermediate_size\": 172");
    cr_assert(p);
    memcpy(p, "\"intermediate_size\": 171", 24);
    expect_load_error(make_hf(cfg, NULL), "model.layers.0.mlp.gate_proj.weight", "expected [171, 64]");
    free(cfg);
}

Test(badinput, st_truncated_everywhere) {
    size_t len;
    unsigned char *st = tu_read(tu_shared(HF_DIR "/model.safetensors"), &len);
    const char *dir = make_hf(NULL, NULL);
    char p[4300];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    size_t cuts[] = {0, 3, 8, 9, 100, 500, 2000, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        tu_write(p, st, cuts[i]);
        mf_err err = {{0}};
        mf_source *s = mf_source_open(dir, &err);
        cr_expect(s == NULL, "truncated at %zu bytes should fail", cuts[i]);
        cr_expect(strstr(err.msg, "model.safetensors"), "cut %zu: message '%s' lacks the file", cuts[i], err.msg);
        mf_source_close(s);
    }
    free(st);
}

Test(badinput, st_header_length_past_end) {
    const char *dir = make_hf(NULL, NULL);
    char p[4300];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unsigned char b[16] = {0xff, 0xff, 0xff, 0, 0, 0, 0, 0, '{', '}'};
    tu_write(p, b, sizeof b);
    expect_load_error(dir, "header length", "past the end");
}

Test(badinput, llama2c_truncated_and_garbage) {
    size_t len;
    unsigned char *b = tu_read(tu_shared("llm_assets/models/stories260K/stories260K.bin"), &len);
    const char *dir = tu_tmpdir();
    char p[4300];
    snprintf(p, sizeof p, "%s/m.bin", dir);
    tu_write(p, b, len - 4);
    expect_load_error(p, "m.bin", "bytes");
    memset(b, 0x7f, 28);
    tu_write(p, b, len);
    expect_load_error(p, "m.bin", "out of range");
    tu_write(p, b, 5);
    expect_load_error(p, "m.bin", "too short");
    free(b);
}

/* Through the binary: one line on stderr, non-zero exit, no output file. */
static void expect_cli_error(const char *args, const char *needle) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s", tu_mpirun(2), args);
    char *out, *err;
    int rc = tu_run(cmd, &out, &err);
    cr_expect_neq(rc, 0, "'%s' should fail", args);
    char *line = strstr(err, "minifuse: error");
    cr_assert(line, "no 'minifuse: error' line in stderr: %s", err);
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    cr_expect(strstr(line, needle), "error line '%s' lacks '%s'", line, needle);
    free(out);
    free(err);
}

Test(badinput, cli_errors, .timeout = 120) {
    const char *model = tu_shared("llm_assets/models/stories260K/stories260K.bin");
    const char *dir = tu_tmpdir();
    char args[16384], text[4300], out[4300];
    snprintf(text, sizeof text, "%s/bad.txt", dir);
    tu_write(text, "hello \xff\xfe world", 14);
    snprintf(args, sizeof args, "eval --model %s --text %s", model, text);
    expect_cli_error(args, "bad.txt");
    snprintf(args, sizeof args, "eval --model %s --text %s --ctx abc", model, text);
    expect_cli_error(args, "--ctx");
    snprintf(args, sizeof args, "eval --model %s --bogus 1", model);
    expect_cli_error(args, "--bogus");
    snprintf(args, sizeof args, "eval --text %s", text);
    expect_cli_error(args, "--model");
    snprintf(args, sizeof args, "eval --model %s/nope.gguf --text %s", dir, text);
    expect_cli_error(args, "nope.gguf");
    snprintf(out, sizeof out, "%s/out.f32", dir);
    snprintf(args, sizeof args, "logits --model %s --ids 1,2,99999 --out %s", model, out);
    expect_cli_error(args, "99999");
    cr_expect(access(out, F_OK) != 0, "a failed logits run must not leave %s", out);
    snprintf(args, sizeof args, "frobnicate");
    expect_cli_error(args, "frobnicate");
    /* GGUF with a bad magic is not GGUF: treated as llama2.c and refused with a clear message */
    snprintf(text, sizeof text, "%s/bad.gguf", dir);
    tu_write(text, "GGUX\x03\0\0\0garbagegarbagegarbagegarbage", 36);
    snprintf(args, sizeof args, "eval --model %s --text %s", text, text);
    expect_cli_error(args, "bad.gguf");
}
