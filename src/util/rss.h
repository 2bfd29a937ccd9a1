/* rss.h - this process's memory high-water mark. */
#ifndef MF_RSS_H
#define MF_RSS_H

#include <stddef.h>

/* Peak resident set size in bytes (getrusage ru_maxrss, KiB on Linux); 0 if unknown. */
size_t mf_peak_rss_bytes(void);

#endif
