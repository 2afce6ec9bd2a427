/* ttt tasks: the task families with verifiable answers (include/ttt/tasks.h, docs/tasks.md).
 *   list   the families: name, category, held-out, answer kind, description
 *   show   examples of one family's split, as text or JSON lines
 *   check  how the checker reads one model output against an expected answer */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ttt/tasks.h"
#include "ttt/tensor.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt tasks list\n"
            "       ttt tasks show --family F [--split train|val|test] [--n N] [--start I] [--jsonl]\n"
            "       ttt tasks check --family F --expected ANSWER [[--] OUTPUT]\n"
            "\n"
            "Generated task families with verifiable answers, for training SVF experts (Transformer-squared)\n"
            "and measuring them; held-out families never train an expert. Examples are a pure function of\n"
            "(family, split, index), and no prompt occurs in two splits (docs/tasks.md).\n"
            "list      the families: name, category, held-out, answer kind, description\n"
            "show      examples I .. I+N-1 of a family's split\n"
            "  --family F       a family name (ttt tasks list)\n"
            "  --split S        train (default), val or test\n"
            "  --n N            how many examples (default 5, at most 1000000)\n"
            "  --start I        the first example's index (default 0)\n"
            "  --jsonl          one JSON object a line: {\"family\", \"split\", \"index\", \"prompt\", \"answer\"}\n"
            "check     reads OUTPUT (or stdin without it; -- before an OUTPUT that starts with '-') as the checker\n"
            "          does and prints"
            " \"correct\" or \"wrong\", a tab, and the first answer it found (exit 0 either way)\n"
            "  --family F       the family whose answer kind applies\n"
            "  --expected A     the expected answer\n"
            "exit codes: 0 ok, 1 runtime failure, 2 bad usage\n");
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

static int list(void) {
    printf("%-12s %-10s %-9s %-7s %s\n", "family", "category", "held-out", "answer", "description");
    for (int i = 0; i < ttt_task_family_count(); i++) {
        const ttt_task_family *f = ttt_task_family_at(i);
        printf("%-12s %-10s %-9s %-7s %s\n", f->name, f->category, f->held_out ? "yes" : "no", ttt_answer_kind_name(f->answer),
               f->description);
    }
    return 0;
}

static int bad_family(const char *cmd, const char *name) {
    fprintf(stderr, "ttt tasks %s: unknown family '%s' (known:", cmd, name);
    for (int i = 0; i < ttt_task_family_count(); i++) fprintf(stderr, "%s %s", i ? "," : "", ttt_task_family_at(i)->name);
    fprintf(stderr, ")\n");
    return 2;
}

static int show(int argc, char **argv) {
    const char *family = NULL, *split_name = "train";
    int64_t n = 5, start = 0;
    int jsonl = 0;
    for (int i = 2; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        if ((r = cli_flag_str(argc, argv, &i, "--family", &family)) || (r = cli_flag_str(argc, argv, &i, "--split", &split_name)) ||
            (r = cli_flag_int(argc, argv, &i, "--n", 1, 1000000, &n)) ||
            (r = cli_flag_int(argc, argv, &i, "--start", 0, INT64_MAX / 2, &start)) || (r = cli_flag_bool(argv, i, "--jsonl", &jsonl))) {
            if (r < 0) return 2;
            continue;
        }
        return cli_unknown("tasks show", argv[i]);
    }
    if (!family) {
        fprintf(stderr, "ttt tasks show: needs --family F (see ttt tasks list)\n");
        return 2;
    }
    if (!ttt_task_family_find(family)) return bad_family("show", family);
    const int split = ttt_task_split_parse(split_name);
    if (split < 0) {
        fprintf(stderr, "ttt tasks show: --split %s: expected train, val or test\n", split_name);
        return 2;
    }
    char err[512];
    for (int64_t k = start; k < start + n; k++) {
        ttt_task_example ex;
        if (ttt_task_generate(family, split, k, &ex, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt tasks show: %s\n", err);
            return 1;
        }
        if (jsonl) {
            printf("{\"family\": ");
            json_string(stdout, family);
            printf(", \"split\": \"%s\", \"index\": %lld, \"prompt\": ", split_name, (long long)k);
            json_string(stdout, ex.prompt);
            printf(", \"answer\": ");
            json_string(stdout, ex.answer);
            printf("}\n");
        } else {
            printf("=== %s %s %lld\n%s\n--- answer: %s\n\n", family, split_name, (long long)k, ex.prompt, ex.answer);
        }
        ttt_task_example_free(&ex);
    }
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}

static int check(int argc, char **argv) {
    const char *family = NULL, *expected = NULL, *output = NULL;
    for (int i = 2; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        if ((r = cli_flag_str(argc, argv, &i, "--family", &family)) || (r = cli_flag_str(argc, argv, &i, "--expected", &expected))) {
            if (r < 0) return 2;
            continue;
        }
        if (!strcmp(argv[i], "--") && i + 1 < argc && !output) { /* an output that starts with '-' */
            output = argv[++i];
            continue;
        }
        if ((argv[i][0] == '-' && argv[i][1]) || output) return cli_unknown("tasks check", argv[i]);
        output = argv[i];
    }
    if (!family || !expected) {
        fprintf(stderr, "ttt tasks check: needs --family F and --expected ANSWER\n");
        return 2;
    }
    const ttt_task_family *f = ttt_task_family_find(family);
    if (!f) return bad_family("check", family);
    char *in = NULL;
    if (!output || !strcmp(output, "-")) { /* the output from stdin, whole */
        size_t len = 0, cap = 0;
        for (;;) {
            if (len + 4096 + 1 > cap) {
                char *p = realloc(in, cap = 2 * cap + 4096 + 1);
                if (!p) {
                    free(in);
                    fprintf(stderr, "ttt tasks check: out of memory reading stdin\n");
                    return 1;
                }
                in = p;
            }
            size_t k = fread(in + len, 1, 4096, stdin);
            len += k;
            if (k < 4096) break;
        }
        in[len] = 0;
        output = in;
    }
    char got[256];
    ttt_task_extract(f->answer, output, got, sizeof got);
    printf("%s\t%s\n", ttt_task_check(f, expected, output) ? "correct" : "wrong", got);
    free(in);
    return 0;
}

int cmd_tasks(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "list")) {
        if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) return usage(stdout), 0;
        if (argc > 2) return cli_unknown("tasks list", argv[2]);
        return list();
    }
    if (!strcmp(sub, "show")) return show(argc, argv);
    if (!strcmp(sub, "check")) return check(argc, argv);
    fprintf(stderr, "ttt tasks: unknown subcommand '%s' (list, show, check)\n", sub);
    return 2;
}
