/* `ttt lm generate --model`: generation with a pretrained Llama-family model. */
#ifndef TTT_PROGRAMS_LLAMA_GENERATE_H
#define TTT_PROGRAMS_LLAMA_GENERATE_H

#include <stdint.h>

#include "ttt/tensor.h"

typedef struct {
    const char *model;       /* a .gguf file or a Hugging Face folder */
    const char *prompt;      /* raw text to continue, or */
    const char *chat;        /* one user turn, rendered with the chat template */
    const char *system;      /* the system message (NULL: the template's default) */
    int64_t tokens, top_k, seed;
    double temperature, top_p;
    ttt_device device;
    int threads;
    int ignore_eos;          /* generate all `tokens` (benchmarks) */
    int show_ids;            /* print the prompt's ids on stderr */
    int64_t context;         /* chat: the positions the conversation may fill (0: 2048) */
    int tf32;                /* CUDA: f32 matmuls on the TF32 tensor cores */
} llama_generate_args;

int llama_generate(const llama_generate_args *a);
/* A conversation on stdin, one line a user turn (cmd_chat.c). */
int llama_chat(const llama_generate_args *a);

#endif
