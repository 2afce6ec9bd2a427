/* ttt: the command-line program. Each subcommand lives in its own file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const struct {
    const char *name;
    cli_command_fn fn;
    const char *help;
} COMMANDS[] = {
    {"demo", cmd_demo, "meta-learn a learner that adapts at test time (synthetic tasks; the main job)"},
    {"vision", cmd_vision, "train / evaluate ViT classifiers with MTTT or attention layers on Fashion-MNIST"},
    {"gradcheck", cmd_gradcheck, "check every op's gradient (order 1) and Hessian-vector product (order 2) in float64"},
    {"data", cmd_data, "token shards: prepare from text files or folders, inspect, verify"},
    {"lm", cmd_lm, "language models: train, eval (loss by position), generate (pretrained GGUF / HF models too)"},
    {"adapt", cmd_adapt, "Transformer-squared on a pretrained model: SVF experts / LoRA by REINFORCE, two-pass dispatch"},
    {"chat", cmd_chat, "a conversation with a pretrained chat model (GGUF or Hugging Face folder)"},
    {"needle", cmd_needle, "passkey retrieval (needle in a haystack) of language models, TTT-E2E included"},
    {"serve", cmd_serve, "an HTTP server for a language model: completions (streamed or not), sessions, state files"},
    {"tokenizer", cmd_tokenizer, "byte-level BPE: train on a corpus, encode text to ids, decode ids (GPT-2 / HF files)"},
    {"tasks", cmd_tasks, "task families with verifiable answers (Transformer-squared experts): list, show, check"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: ttt <command> [flags]   (ttt <command> --help for its flags)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
}

/* Idle OpenMP and OpenBLAS threads busy-wait by default, and on a shared
 * machine they take the cores that the working threads need: `lm generate`
 * ran 130x slower with the default threads than with one on a loaded 2-core
 * machine. Both runtimes read their wait settings from the environment when
 * they load, before main, so a setenv here would come too late: when the user
 * has set neither, set passive waiting and start the program again (once; the
 * variables set are the guard). The user's own settings always win. */
static void prefer_passive_waiting(char **argv) {
    if (getenv("TTT_NO_REEXEC") || getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1); /* 2^4 cycles, its least */
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the runtimes' defaults */
}

int main(int argc, char **argv) {
    prefer_passive_waiting(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "ttt: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
