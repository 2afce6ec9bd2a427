/* `ttt adapt`: Transformer-squared (design §4, docs/transformer2.md) on a pretrained
 * model (GGUF or Hugging Face folder):
 *   svd       the thin SVD of the adapted matrices, computed once into a cache file
 *   train     an SVF expert (or the LoRA baseline) trained by REINFORCE on a task family
 *   eval      accuracy on a task family's split, with the base model or an expert
 *   dispatch  two-pass inference over task families: pass 1 picks the adaptation
 *             (prompt classification, a classification expert, or CEM few-shot
 *             mixing of the experts), pass 2 answers with it; accuracy, the
 *             dispatch confusion matrix, and pass-1 time against pass-2 time
 * The generation, reward and search loops are in adapt_loop.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt_loop.h"
#include "cli.h"
#include "ttt/runtime.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt adapt <svd|train|eval|dispatch> --model FILE.gguf|HF_DIR [flags]\n\n"
            "  svd       compute (or load) the SVD cache of the adapted matrices\n"
            "  train     train an expert by REINFORCE:  --task FAMILY --out EXPERT.safetensors [--method svf|lora]\n"
            "  eval      accuracy on a task family:      --task FAMILY [--expert FILE] [--split test] [--n N]\n"
            "  dispatch  two-pass inference:             --tasks F1,F2,.. --experts E1,E2,.. --strategy prompt|classifier|cem\n\n"
            "common flags:\n"
            "  --model PATH           the pretrained model (scripts/get-smollm2.sh fetches SmolLM2-135M-Instruct)\n"
            "  --matrices mlp|attn|all  which matrices are adapted (default mlp: gate, up, down of every block)\n"
            "  --svd-cache FILE       the SVD cache (default: PATH.svd-MATRICES.safetensors beside a GGUF file,\n"
            "                         or inside a Hugging Face folder)\n"
            "  --device auto|cpu|cuda  --threads N  --seed N (default 1)\n"
            "  --max-new N            answer tokens at most (default 12)\n"
            "  --gen-batch N          prompts decoded together (default 16)\n"
            "train:\n"
            "  --method svf|lora      (default svf)   --rank R (LoRA, default 16)   --alpha A (LoRA, default 2 R)\n"
            "  --steps N (default 40)  --batch B (default 16)  --micro-batch M (default min(4, B))  --lr (default 2e-3)\n"
            "  --kl C (KL to the base model, default 0)  --clip N (default 1.0)  --temperature T (sampling, default 0.7)\n"
            "  --val-n N (validation examples, default 32)  --eval-every N (default 10)  --metrics FILE.jsonl\n"
            "  --baseline             subtract the batch's mean reward (default: the raw +1 / -1 of SPEC)\n"
            "  --time-limit S         stop (after a last validation) before a step would end past S seconds\n"
            "  The expert with the best validation accuracy is kept in --out (written atomically).\n"
            "eval:\n"
            "  --split train|val|test (default test)  --n N (default 100)  --start I (default 0)  --show K (print K answers)\n"
            "dispatch:\n"
            "  --classifier FILE      the classification expert (strategy classifier)\n"
            "  --per-matrix           CEM: one coefficient per expert and matrix (default: one per expert)\n"
            "  --cem-fitness accuracy|logprob  CEM's fitness: accuracy on the shots (default), or that plus 0.01 x the\n"
            "                         mean log-prob of their right answers (orders mixtures of equal accuracy)\n"
            "  --cem-pop N (default 32)  --cem-elite F (default 0.2)  --cem-iters N (default 10)  --cem-shots N (default 10)\n"
            "  --n N  --split S       test examples per family (default 50, test)\n");
}

static int parse_csv(const char *s, const char ***out, int *n) {
    *out = NULL;
    *n = 0;
    if (!s || !*s) return 0;
    char *copy = strdup(s);
    if (!copy) return -1;
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    const char **v = calloc((size_t)cap, sizeof *v);
    if (!v) {
        free(copy);
        return -1;
    }
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) v[(*n)++] = tok; /* copy is kept alive by v[0] */
    *out = v;
    return 0;
}

int cmd_adapt(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "svd") && strcmp(sub, "train") && strcmp(sub, "eval") && strcmp(sub, "dispatch")) {
        fprintf(stderr, "ttt adapt: unknown subcommand '%s' (svd, train, eval, dispatch)\n", sub);
        return EXIT_USAGE;
    }
    adapt_args a = {.max_new = 12, .gen_batch = 16, .seed = 1, .method = "svf", .rank = 16, .alpha = 0, .steps = 40,
                    .batch = 16, .micro_batch = 0, .lr = 2e-3, .clip = 1.0, .temperature = 0.7, .val_n = 32,
                    .eval_every = 10, .split = NULL, .n = 0, .cem_pop = 32, .cem_elite = 0.2, .cem_iters = 10,
                    .cem_shots = 10, .matrices = "mlp"};
    const char *device = "auto", *tasks = NULL, *experts = NULL;
    int64_t threads = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        int r;
        if ((r = cli_flag_str(argc, argv, &i, "--model", &a.model)) || (r = cli_flag_str(argc, argv, &i, "--matrices", &a.matrices)) ||
            (r = cli_flag_str(argc, argv, &i, "--svd-cache", &a.svd_cache)) ||
            (r = cli_flag_str(argc, argv, &i, "--device", &device)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 4096, &threads)) ||
            (r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &a.seed)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-new", 1, 4096, &a.max_new)) ||
            (r = cli_flag_int(argc, argv, &i, "--gen-batch", 1, 4096, &a.gen_batch)) ||
            (r = cli_flag_str(argc, argv, &i, "--task", &a.task)) || (r = cli_flag_str(argc, argv, &i, "--out", &a.out)) ||
            (r = cli_flag_str(argc, argv, &i, "--method", &a.method)) ||
            (r = cli_flag_int(argc, argv, &i, "--rank", 1, 4096, &a.rank)) ||
            (r = cli_flag_double(argc, argv, &i, "--alpha", 1e-9, 1e9, &a.alpha)) ||
            (r = cli_flag_int(argc, argv, &i, "--steps", 0, 1 << 30, &a.steps)) ||
            (r = cli_flag_int(argc, argv, &i, "--batch", 1, 1 << 16, &a.batch)) ||
            (r = cli_flag_int(argc, argv, &i, "--micro-batch", 1, 1 << 16, &a.micro_batch)) ||
            (r = cli_flag_double(argc, argv, &i, "--lr", 0, 10, &a.lr)) ||
            (r = cli_flag_double(argc, argv, &i, "--kl", 0, 100, &a.kl)) ||
            (r = cli_flag_double(argc, argv, &i, "--clip", 0, 1e9, &a.clip)) ||
            (r = cli_flag_double(argc, argv, &i, "--temperature", 0, 100, &a.temperature)) ||
            (r = cli_flag_double(argc, argv, &i, "--time-limit", 0, 1e9, &a.time_limit)) ||
            (r = cli_flag_int(argc, argv, &i, "--val-n", 1, 1 << 20, &a.val_n)) ||
            (r = cli_flag_int(argc, argv, &i, "--eval-every", 1, 1 << 30, &a.eval_every)) ||
            (r = cli_flag_str(argc, argv, &i, "--metrics", &a.metrics)) ||
            (r = cli_flag_str(argc, argv, &i, "--expert", &a.expert)) ||
            (r = cli_flag_str(argc, argv, &i, "--split", &a.split)) ||
            (r = cli_flag_int(argc, argv, &i, "--n", 1, 1 << 24, &a.n)) ||
            (r = cli_flag_int(argc, argv, &i, "--start", 0, (int64_t)1 << 40, &a.start)) ||
            (r = cli_flag_int(argc, argv, &i, "--show", 0, 1 << 20, &a.show)) ||
            (r = cli_flag_str(argc, argv, &i, "--tasks", &tasks)) || (r = cli_flag_str(argc, argv, &i, "--experts", &experts)) ||
            (r = cli_flag_str(argc, argv, &i, "--strategy", &a.strategy)) ||
            (r = cli_flag_str(argc, argv, &i, "--classifier", &a.classifier)) ||
            (r = cli_flag_int(argc, argv, &i, "--cem-pop", 2, 1 << 16, &a.cem_pop)) ||
            (r = cli_flag_double(argc, argv, &i, "--cem-elite", 1e-6, 1, &a.cem_elite)) ||
            (r = cli_flag_int(argc, argv, &i, "--cem-iters", 1, 1 << 16, &a.cem_iters)) ||
            (r = cli_flag_int(argc, argv, &i, "--cem-shots", 1, 1 << 16, &a.cem_shots))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        if (!strcmp(argv[i], "--per-matrix")) {
            a.per_matrix = 1;
            continue;
        }
        if (!strcmp(argv[i], "--baseline")) {
            a.baseline = 1;
            continue;
        }
        const char *fitness = NULL;
        if ((r = cli_flag_str(argc, argv, &i, "--cem-fitness", &fitness))) {
            if (r < 0) return EXIT_USAGE;
            if (strcmp(fitness, "accuracy") && strcmp(fitness, "logprob")) {
                fprintf(stderr, "ttt adapt: --cem-fitness %s: expected accuracy or logprob\n", fitness);
                return EXIT_USAGE;
            }
            a.cem_logprob = !strcmp(fitness, "logprob");
            continue;
        }
        return cli_unknown("adapt", argv[i]);
    }
    if (!a.micro_batch) a.micro_batch = a.batch < 4 ? a.batch : 4;
    const char *what = NULL;
    if (!a.model) what = "needs --model FILE.gguf|HF_DIR";
    else if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) what = "--device: expected auto, cpu or cuda";
    else if (strcmp(a.matrices, "mlp") && strcmp(a.matrices, "attn") && strcmp(a.matrices, "all"))
        what = "--matrices: expected mlp, attn or all";
    else if (strcmp(a.method, "svf") && strcmp(a.method, "lora")) what = "--method: expected svf or lora";
    else if (a.split && strcmp(a.split, "train") && strcmp(a.split, "val") && strcmp(a.split, "test"))
        what = "--split: expected train, val or test";
    else if (!strcmp(sub, "train") && (!a.task || !a.out)) what = "train needs --task FAMILY and --out FILE";
    else if (!strcmp(sub, "train") && a.micro_batch > a.batch) what = "--micro-batch must not exceed --batch";
    else if (!strcmp(sub, "eval") && !a.task) what = "eval needs --task FAMILY";
    else if (!strcmp(sub, "dispatch") && (!tasks || !a.strategy)) what = "dispatch needs --tasks and --strategy";
    else if (!strcmp(sub, "dispatch") && strcmp(a.strategy, "prompt") && strcmp(a.strategy, "classifier") &&
             strcmp(a.strategy, "cem"))
        what = "--strategy: expected prompt, classifier or cem";
    else if (!strcmp(sub, "dispatch") && !experts) what = "dispatch needs --experts E1,E2,... (SVF experts)";
    else if (!strcmp(sub, "dispatch") && !strcmp(a.strategy, "classifier") && !a.classifier)
        what = "--strategy classifier needs --classifier FILE";
    if (what) {
        fprintf(stderr, "ttt adapt %s: %s (see ttt adapt --help)\n", sub, what);
        return EXIT_USAGE;
    }
    if (parse_csv(tasks, &a.tasks, &a.n_tasks) || parse_csv(experts, &a.experts, &a.n_experts)) {
        fprintf(stderr, "ttt adapt: out of memory\n");
        return EXIT_RUNTIME;
    }
    if (!a.alpha) a.alpha = 2.0 * (double)a.rank;
    a.device = !strcmp(device, "cuda") || (!strcmp(device, "auto") && ttt_device_count(TTT_CUDA) > 0) ? TTT_CUDA : TTT_CPU;
    a.threads = (int)threads;
    int rc;
    if (!strcmp(sub, "svd")) rc = adapt_svd(&a);
    else if (!strcmp(sub, "train")) rc = adapt_train(&a);
    else if (!strcmp(sub, "eval")) rc = adapt_eval(&a);
    else rc = adapt_dispatch(&a);
    if (a.tasks) free((void *)a.tasks[0]);
    if (a.experts) free((void *)a.experts[0]);
    free(a.tasks), free(a.experts);
    return rc;
}
