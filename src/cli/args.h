/* args.h - table-driven command-line options: --name value, --flag, --help. */
#ifndef MF_ARGS_H
#define MF_ARGS_H

#include "util/err.h"

typedef enum { MF_OPT_STR, MF_OPT_INT, MF_OPT_FLOAT, MF_OPT_FLAG, MF_OPT_U64 } mf_opt_type;

typedef struct mf_opt {
    const char *name;   /* without the leading "--" */
    mf_opt_type type;
    void *dst;          /* char **, int *, float *, int * (flag), unsigned long long * */
    const char *help;
    int required;
} mf_opt;

/* Parse argv[1..] (argv[0] is the command name). Returns 0 on success, 1 if
 * --help was printed, -1 with err naming the option on a bad option. */
int mf_args_parse(const char *cmd, const char *summary, const mf_opt *opts, int n_opts, int argc, char **argv, mf_err *err);
void mf_args_usage(const char *cmd, const char *summary, const mf_opt *opts, int n_opts);
/* The environment variables every command reads (printed at the end of every --help). */
void mf_args_env_help(void);

/* mf_args_parse for commands: ends the job with a one-line error on a bad
 * option; returns 1 when --help was printed (the command then returns 0). */
int mf_args_parse_or_die(const char *cmd, const char *summary, const mf_opt *opts, int n_opts, int argc, char **argv);

/* Parse "1,2,3" into an int array (mf_malloc'ed). */
int mf_args_int_list(const char *opt, const char *s, int **out, int *n, mf_err *err);

#endif
