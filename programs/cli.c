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

int cli_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

/* JSON number, or null for NaN / infinity (JSON has neither). */
void cli_json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f);
}

void cli_fmt_double(char *buf, size_t n, double v) {
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, n, "%.17g", v);
}

int cli_config_value(const char *s, const char *key, char *buf, size_t n) {
    size_t kl = strlen(key);
    for (const char *p = s; p && *p;) {
        while (*p == ' ') p++;
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > kl && !strncmp(p, key, kl) && p[kl] == '=') {
            size_t vl = len - kl - 1 < n - 1 ? len - kl - 1 : n - 1;
            memcpy(buf, p + kl + 1, vl);
            buf[vl] = 0;
            return 1;
        }
        p = end;
    }
    return 0;
}

FILE *cli_atomic_open(const char *path, char *tmp, size_t n) {
    if (snprintf(tmp, n, "%s.tmp", path) >= (int)n) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    return fopen(tmp, "w");
}

int cli_atomic_commit(FILE *f, const char *tmp, const char *path) {
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = ok ? 0 : errno;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) {
        remove(tmp);
        errno = e;
        return -1;
    }
    /* the rename is durable once the directory is synced (some file systems cannot: not a failure) */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        int rc = fsync(fd);
        e = errno;
        close(fd);
        if (rc != 0 && e != EINVAL && e != EBADF && e != ENOTSUP) return errno = e, -1;
    }
    return 0;
}

void cli_named_free(cli_named_list *l) {
    for (int i = 0; i < l->n_owned; i++) free(l->owned[i]);
    free(l->owned);
    free(l->t);
    *l = (cli_named_list){0};
}

int cli_named_build(int n, ttt_tensor *const *params, const char *const *names, ttt_optimizer *opt,
                    cli_named_list *l) {
    *l = (cli_named_list){0};
    int ns = 0;
    ttt_tensor *const *state = opt ? ttt_optimizer_state(opt, &ns) : NULL;
    if (opt && ns != 2 * n) return -1;
    l->t = calloc((size_t)(n + ns), sizeof *l->t);
    l->owned = calloc((size_t)ns + 1, sizeof *l->owned);
    if (!l->t || !l->owned) return -1;
    for (int i = 0; i < n; i++) l->t[l->n++] = (ttt_named_tensor){names[i], params[i]};
    for (int i = 0; i < ns; i++) {
        const char *p = names[i % n];
        size_t len = strlen(p) + 16;
        if (!(l->owned[l->n_owned] = malloc(len))) return -1;
        snprintf(l->owned[l->n_owned], len, "optim.%s.%s", i < n ? "m" : "v", p);
        l->t[l->n++] = (ttt_named_tensor){l->owned[l->n_owned++], state[i]};
    }
    return 0;
}
