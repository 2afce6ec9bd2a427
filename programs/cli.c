#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *flag_value(int argc, char **argv, int *i, const char *name) {
    if (strcmp(argv[*i], name) != 0) return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "ttt: %s needs a value\n", name);
        return "";
    }
    return argv[++*i];
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
