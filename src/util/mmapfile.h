/* mmapfile.h - read-only memory map of a whole file. */
#ifndef MF_MMAPFILE_H
#define MF_MMAPFILE_H

#include <stddef.h>
#include "util/err.h"

typedef struct mf_mmap {
    const unsigned char *data; /* NULL for an empty file */
    size_t size;
    char *path;
} mf_mmap;

int mf_mmap_open(mf_mmap *m, const char *path, mf_err *err);
void mf_mmap_close(mf_mmap *m);

/* Read a whole (small) file into a NUL-terminated mf_malloc'ed buffer. */
char *mf_read_file(const char *path, size_t *len, mf_err *err);

#endif
