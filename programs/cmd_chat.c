/* ttt chat: a conversation with a pretrained chat model (docs/llama.md), one line of
 * stdin a user turn, the answers on stdout; the KV cache keeps the conversation. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "llama_generate.h"
#include "ttt/runtime.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ttt chat --model FILE.gguf|HF_DIR [flags]   (then one line of stdin per user turn)\n"
               "  --system TEXT       the system message (default: the chat template's own)\n"
               "  --tokens N          the longest answer (default 512)\n"
               "  --context N         positions the conversation may fill before it starts over (default 2048)\n"
               "  --temperature T     0: greedy (default 0.7); --top-k K, --top-p P, --seed S as in ttt lm generate\n"
               "  --device D          auto | cpu | cuda (default auto); --threads N (CPU, default 0: fit the machine)\n"
               "Chat templates of the ChatML family only (SmolLM2, Qwen2, ...). Exit codes: 0 ok, 1 runtime, 2 usage.\n");
}

int cmd_chat(int argc, char **argv) {
    llama_generate_args a = {.tokens = 512, .temperature = 0.7, .top_p = 1.0, .seed = 1, .context = 2048};
    const char *device = "auto";
    int64_t threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        int r;
        if ((r = cli_flag_str(argc, argv, &i, "--model", &a.model)) || (r = cli_flag_str(argc, argv, &i, "--system", &a.system)) ||
            (r = cli_flag_int(argc, argv, &i, "--tokens", 1, 1 << 20, &a.tokens)) ||
            (r = cli_flag_int(argc, argv, &i, "--context", 16, (int64_t)1 << 24, &a.context)) ||
            (r = cli_flag_double(argc, argv, &i, "--temperature", 0, 100, &a.temperature)) ||
            (r = cli_flag_int(argc, argv, &i, "--top-k", 0, 1 << 30, &a.top_k)) ||
            (r = cli_flag_double(argc, argv, &i, "--top-p", 1e-9, 1, &a.top_p)) ||
            (r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &a.seed)) ||
            (r = cli_flag_str(argc, argv, &i, "--device", &device)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 4096, &threads))) {
            if (r < 0) return 2;
            continue;
        }
        return cli_unknown("chat", argv[i]);
    }
    if (!a.model) {
        fprintf(stderr, "ttt chat: needs --model FILE.gguf|HF_DIR (see --help)\n");
        return 2;
    }
    if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "ttt chat: --device %s: expected auto, cpu or cuda\n", device);
        return 2;
    }
    if (a.tokens + 16 > a.context) {
        fprintf(stderr, "ttt chat: --tokens %lld leaves no room in --context %lld\n", (long long)a.tokens, (long long)a.context);
        return 2;
    }
    const int cuda = !strcmp(device, "cuda") || (!strcmp(device, "auto") && ttt_device_count(TTT_CUDA) > 0);
    a.device = cuda ? TTT_CUDA : TTT_CPU;
    a.threads = (int)threads;
    return llama_chat(&a);
}
