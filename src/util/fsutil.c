/* fsutil.c - rmtree without a shell, unique temporaries, stale clean-up, output lock. */
#include "util/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- rmtree */

static int rm_errno;
static char rm_what[4096];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)ftw;
    int rc = flag == FTW_DP ? rmdir(p) : unlink(p);
    if (rc != 0 && errno != ENOENT && !rm_errno) {
        rm_errno = errno;
        snprintf(rm_what, sizeof rm_what, "%s", p);
    }
    return 0; /* go on: remove as much as possible */
}

int mf_rmtree(const char *path, mf_err *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : mf_err_set(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT) return mf_err_set(err, "cannot remove %s: %s", path, strerror(errno));
        return 0;
    }
    rm_errno = 0;
    rm_what[0] = 0;
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && !rm_errno) {
        rm_errno = errno;
        snprintf(rm_what, sizeof rm_what, "%s", path);
    }
    if (rm_errno) return mf_err_set(err, "cannot remove %s: %s", rm_what, strerror(rm_errno));
    return 0;
}

/* ---------------------------------------------------------------- temporary names */

const char *mf_host_tag(void) {
    static char tag[64];
    if (tag[0]) return tag;
    char h[256] = "";
    if (gethostname(h, sizeof h - 1) != 0) h[0] = 0;
    size_t o = 0;
    for (size_t i = 0; h[i] && o < sizeof tag - 1; i++) {
        char c = h[i];
        if (c == '.') break; /* the short name */
        tag[o++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ? c : '-';
    }
    tag[o] = 0;
    if (!o) snprintf(tag, sizeof tag, "host");
    return tag;
}

static uint32_t random32(void) {
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static uint32_t ctr;
    return (uint32_t)ts.tv_nsec ^ ((uint32_t)ts.tv_sec << 7) ^ ((uint32_t)getpid() << 16) ^ (ctr += 0x9e3779b9u);
}

char *mf_tmp_unique(const char *path) {
    size_t cap = strlen(path) + 128;
    char *t = mf_malloc(cap);
    snprintf(t, cap, "%s.tmp.%s.%ld.%08x", path, mf_host_tag(), (long)getpid(), random32());
    return t;
}

int mf_tmp_parse(const char *name, char *host_out, size_t cap, pid_t *pid) {
    size_t n = strlen(name);
    /* from the right: 8 hex digits */
    if (n < 8 + 1) return 0;
    const char *hex = name + n - 8;
    for (int i = 0; i < 8; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'))) return 0;
    if (hex[-1] != '.') return 0;
    /* the pid */
    const char *e = hex - 1, *p = e;
    while (p > name && p[-1] >= '0' && p[-1] <= '9') p--;
    if (p == e || e - p > 10 || p == name || p[-1] != '.') return 0;
    long v = strtol(p, NULL, 10);
    if (v <= 0 || v > 0x7fffffff) return 0;
    /* the host */
    const char *he = p - 1, *h = he;
    while (h > name && (((h[-1] | 0x20) >= 'a' && (h[-1] | 0x20) <= 'z') || (h[-1] >= '0' && h[-1] <= '9') || h[-1] == '-')) h--;
    if (h == he || he - h > 63) return 0;
    if (h - name < 5 || memcmp(h - 5, ".tmp.", 5) != 0) return 0;
    if (h - 5 == name) return 0; /* no final name before ".tmp." */
    if (host_out && cap) snprintf(host_out, cap, "%.*s", (int)(he - h), h);
    if (pid) *pid = (pid_t)v;
    return 1;
}

int mf_clean_stale_tmps(const char *dir, const char *prefix, void (*log)(const char *path)) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *de;
    char host[64];
    pid_t pid;
    while ((de = readdir(d))) {
        if (prefix && strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        if (!mf_tmp_parse(de->d_name, host, sizeof host, &pid)) continue;
        if (strcmp(host, mf_host_tag()) != 0) continue;          /* another host: cannot tell */
        if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to probe) */
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *full = mf_malloc(len);
        snprintf(full, len, "%s/%s", dir, de->d_name);
        if (mf_rmtree(full, NULL) == 0) {
            removed++;
            if (log) log(full);
        }
        free(full);
    }
    closedir(d);
    return removed;
}

/* ---------------------------------------------------------------- lock */

typedef struct held_lock {
    char *path;
    int fd;
} held_lock;
static held_lock held[16];

/* The lock at lockpath (open as fd) is held by another process: close fd and
 * say who holds it (its "<pid> <host>" line, else F_GETLK's pid). */
static int refused(int fd, int en, const char *lockpath, const char *what, mf_err *err) {
    char buf[200] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    long hpid = 0;
    char hhost[128] = "?";
    if (sscanf(buf, "%ld %127s", &hpid, hhost) < 1) hpid = 0;
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (!hpid && fcntl(fd, F_GETLK, &q) == 0 && q.l_type != F_UNLCK) hpid = q.l_pid;
    close(fd);
    if (en != EAGAIN && en != EACCES) return mf_err_set(err, "%s: cannot lock %s: %s", lockpath, what, strerror(en));
    return mf_err_set(err, "%s is locked by pid %ld on %s: another minifuse job is writing %s (wait for it to end; "
                      "the lock goes with its process)", lockpath, hpid, hhost, what);
}

int mf_lock_acquire(const char *lockpath, const char *what, mf_err *err) {
    int slot = -1;
    for (int i = 0; i < (int)(sizeof held / sizeof *held); i++) {
        if (held[i].path && strcmp(held[i].path, lockpath) == 0) return 0;
        if (!held[i].path && slot < 0) slot = i;
    }
    if (slot < 0) return mf_err_set(err, "%s: too many output locks held by this process", lockpath);
    for (int attempt = 0;; attempt++) {
        int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return mf_err_set(err, "%s: cannot create the lock file for %s: %s", lockpath, what, strerror(errno));
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        if (fcntl(fd, F_SETLK, &fl) != 0) return refused(fd, errno, lockpath, what, err);
        /* Locked. A holder that finished may have removed the file (mf_lock_drop)
         * between our open and our lock: then we hold a lock on a file nobody
         * else can find, and must take the one now at lockpath instead. */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lockpath, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            char line[128];
            int len = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), mf_host_tag());
            if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) { /* informative only */ }
            held[slot].path = mf_strdup(lockpath);
            held[slot].fd = fd;
            return 0;
        }
        close(fd);
        if (attempt == 16) return mf_err_set(err, "%s: the lock file for %s keeps being replaced", lockpath, what);
    }
}

void mf_lock_drop(const char *lockpath) {
    for (int i = 0; i < (int)(sizeof held / sizeof *held); i++)
        if (held[i].path && strcmp(held[i].path, lockpath) == 0) unlink(lockpath); /* still locked: see acquire */
    mf_lock_release(lockpath);
}

void mf_lock_release(const char *lockpath) {
    for (int i = 0; i < (int)(sizeof held / sizeof *held); i++)
        if (held[i].path && strcmp(held[i].path, lockpath) == 0) {
            close(held[i].fd);
            free(held[i].path);
            held[i].path = NULL;
        }
}
