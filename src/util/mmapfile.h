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
/* Drop the whole pages inside [p, p + n) of a read-only file map from this
 * process's memory (madvise MADV_DONTNEED): a tensor converted into a copy
 * need not keep its file pages resident (they count in RSS); a later read
 * faults them in again from the file. Only for file maps that are never
 * written: on anonymous memory it would zero the pages. */
void mf_mmap_drop(const void *p, size_t n);

/* Read a whole (small) file into a NUL-terminated mf_malloc'ed buffer. */
char *mf_read_file(const char *path, size_t *len, mf_err *err);

#endif
