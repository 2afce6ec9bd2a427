/* Small helpers shared by the ttt subcommands: flag parsing with checked
 * numbers, and error reporting. */
#ifndef TTT_PROGRAMS_CLI_H
#define TTT_PROGRAMS_CLI_H

#include <stdint.h>
#include <stdio.h>

typedef int (*cli_command_fn)(int argc, char **argv);

/* Parse "--name value" pairs. Each returns 1 if argv[*i] was this flag (and
 * advances *i), 0 if not, -1 on a bad value (message printed). */
int cli_flag_int(int argc, char **argv, int *i, const char *name, int64_t lo, int64_t hi, int64_t *out);
int cli_flag_double(int argc, char **argv, int *i, const char *name, double lo, double hi, double *out);
int cli_flag_bool(char **argv, int i, const char *name, int *out);
int cli_flag_str(int argc, char **argv, int *i, const char *name, const char **out);
/* Report an unknown argument and return 2. */
int cli_unknown(const char *cmd, const char *arg);

/* mkdir -p (0 / -1 with errno). */
int cli_mkdir_p(const char *path);
/* A JSON number, or null for NaN / infinity (JSON has neither). */
void cli_json_num(FILE *f, double v);
/* Monotonic seconds. */
double cli_now(void);

/* A double that reads back (strtod) to the same bits: %.15g, else %.17g. */
void cli_fmt_double(char *buf, size_t n, double v);
/* The value of key in a "key=value key=value ..." string (the configs stored
 * in checkpoint metadata), copied into buf; 1 if present, 0 if absent. */
int cli_config_value(const char *s, const char *key, char *buf, size_t n);

/* Atomic file writes: cli_atomic_open opens PATH.tmp (its name into tmp);
 * cli_atomic_commit flushes, fsyncs and closes f, renames tmp over path and
 * fsyncs the directory, so a killed run leaves the old file or the new one.
 * 0 / -1 with errno (f is closed and tmp removed either way). */
FILE *cli_atomic_open(const char *path, char *tmp, size_t n);
int cli_atomic_commit(FILE *f, const char *tmp, const char *path);

/* A tokenizer from PATH: a directory with GPT-2 style vocab.json + merges.txt
 * (as `ttt tokenizer train` writes them; CLI_EOT becomes special when present)
 * or a Hugging Face tokenizer.json file. 0, or an exit code after a message. */
#define CLI_EOT "<|endoftext|>"
struct ttt_tokenizer;
int cli_load_tokenizer(const char *cmd, const char *path, struct ttt_tokenizer **tok);

/* What a training checkpoint holds: the model's n parameters under their names,
 * then (opt != NULL) the AdamW moments as optim.m.<name> and optim.v.<name>.
 * 0, or -1 when out of memory or the optimizer does not match; free with
 * cli_named_free either way. */
#include "ttt/checkpoint.h"
typedef struct {
    ttt_named_tensor *t;
    int n;
    char **owned; /* the optimizer names made here */
    int n_owned;
} cli_named_list;
struct ttt_optimizer;
int cli_named_build(int n, ttt_tensor *const *params, const char *const *names, struct ttt_optimizer *opt,
                    cli_named_list *l);
void cli_named_free(cli_named_list *l);

int cmd_gradcheck(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_vision(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_lm(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
