#include "cli.h"

#include "ttt/optim.h"
#include "ttt/tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *flag_value(int argc, char **argv, int *i, const char *name) {
    if (strcmp(argv[*i], name) != 0) return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "ttt: %s needs a value\n", name);
        return "";
    }
    if (!*argv[++*i]) fprintf(stderr, "ttt: %s: the value is empty\n", name);
    return argv[*i];
}

int cli_flag_int(int argc, char **argv, int *i, const char *name, int64_t lo, int64_t hi, int64_t *out) {
    const char *v = flag_value(argc, argv, i, name);
    if (!v) return 0;
    if (!*v) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "ttt: %s %s: expected an integer in [%lld, %lld]\n", name, v, (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 1;
}

int cli_flag_double(int argc, char **argv, int *i, const char *name, double lo, double hi, double *out) {
    const char *v = flag_value(argc, argv, i, name);
    if (!v) return 0;
    if (!*v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "ttt: %s %s: expected a number in [%g, %g]\n", name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 1;
}

int cli_flag_bool(char **argv, int i, const char *name, int *out) {
    if (strcmp(argv[i], name) != 0) return 0;
    *out = 1;
    return 1;
}

int cli_unknown(const char *cmd, const char *arg) {
    fprintf(stderr, "ttt %s: unknown argument '%s' (see ttt %s --help)\n", cmd, arg, cmd);
    return 2;
}

int cli_flag_str(int argc, char **argv, int *i, const char *name, const char **out) {
    const char *v = flag_value(argc, argv, i, name);
    if (!v) return 0;
    if (!*v) return -1;
    *out = v;
    return 1;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_load_tokenizer(const char *cmd, const char *path, ttt_tokenizer **tok) {
    char err[512], vocab[4096], merges[4096];
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        fprintf(stderr, "ttt %s: tokenizer %s: %s\n", cmd, path ? path : "(none)", path ? strerror(errno) : "give --tokenizer");
        return 2;
    }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        snprintf(vocab, sizeof vocab, "%s/vocab.json", path);
        snprintf(merges, sizeof merges, "%s/merges.txt", path);
        rc = ttt_tokenizer_load_gpt2(vocab, merges, tok, err, sizeof err);
        /* GPT-2 files do not mark their end-of-text token as special; we do */
        if (!rc && ttt_tokenizer_piece_id(*tok, CLI_EOT, strlen(CLI_EOT)) >= 0)
            rc = ttt_tokenizer_add_special(*tok, CLI_EOT, NULL, err, sizeof err);
    } else {
        rc = ttt_tokenizer_load_json(path, tok, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "ttt %s: %s\n", cmd, err);
        return 1;
    }
    return 0;
}
