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

/* Monotonic seconds. */
double cli_now(void);

/* A tokenizer from PATH: a directory with GPT-2 style vocab.json + merges.txt
 * (as `ttt tokenizer train` writes them; CLI_EOT becomes special when present)
 * or a Hugging Face tokenizer.json file. 0, or an exit code after a message. */
#define CLI_EOT "<|endoftext|>"
struct ttt_tokenizer;
int cli_load_tokenizer(const char *cmd, const char *path, struct ttt_tokenizer **tok);

int cmd_gradcheck(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_vision(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_lm(int argc, char **argv);
int cmd_needle(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_adapt(int argc, char **argv);
int cmd_tasks(int argc, char **argv);

#endif
