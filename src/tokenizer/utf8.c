/* utf8.c - strict UTF-8 validation (RFC 3629) and small helpers. */
#include "tokenizer/tok_internal.h"

static int is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Length of the valid sequence at s[0..n), or 0 with *why set. */
static int seq_len(const unsigned char *s, size_t n, const char **why) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC0) return *why = "unexpected continuation byte", 0;
    if (c < 0xC2) return *why = "overlong 2-byte sequence", 0;
    if (c > 0xF4) return *why = "invalid lead byte", 0;
    int len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    /* allowed range of the second byte */
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (n < 2 || !is_cont(s[1])) return *why = "truncated multi-byte sequence", 0;
    if (s[1] < lo) return *why = "overlong encoding", 0;
    if (s[1] > hi) return *why = c == 0xED ? "UTF-16 surrogate code point" : "code point above U+10FFFF", 0;
    for (int i = 2; i < len; i++)
        if ((size_t)i >= n || !is_cont(s[i])) return *why = "truncated multi-byte sequence", 0;
    return len;
}

int tok_utf8_check(const char *s, size_t n, mf_err *err) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { /* ASCII fast path */
            i++;
            continue;
        }
        const char *why = "";
        int len = seq_len(u + i, n - i, &why);
        if (!len) return mf_err_set(err, "text: invalid UTF-8 at byte offset %zu (byte 0x%02X): %s", i, u[i], why);
        i += (size_t)len;
    }
    return 0;
}

int tok_utf8_len(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    return 4;
}

int tok_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
