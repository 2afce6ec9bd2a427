/* Task families (include/ttt/tasks.h): the table, determinism (the same bytes for the
 * same (family, split, index), and pinned hashes of the first examples), disjoint
 * splits over 2000 examples a split, every answer recomputed from its prompt by an
 * independent reading (a small Python interpreter for the code families), the
 * checker on tricky outputs, and the error messages. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/tasks.h"
#include "ttt/tensor.h"

static uint64_t fnv(uint64_t h, const char *s) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (h ^ 0xff) * 0x100000001b3ull; /* a separator, so ("ab","c") != ("a","bc") */
}

/* ---- the table ------------------------------------------------------------------------------- */

static void test_table(void) {
    const int n = ttt_task_family_count();
    CHECK(n >= 7);
    const char *cats[] = {"math", "code", "reasoning"};
    int train[3] = {0}, held[3] = {0}, classify = 0;
    for (int i = 0; i < n; i++) {
        const ttt_task_family *f = ttt_task_family_at(i);
        CHECK(f && f->name && f->category && f->description && *f->description);
        if (!f) continue;
        CHECK(ttt_task_family_find(f->name) == f);
        for (int j = 0; j < i; j++) CHECK_MSG(strcmp(ttt_task_family_at(j)->name, f->name), "duplicate %s", f->name);
        int known = 0;
        for (int c = 0; c < 3; c++)
            if (!strcmp(f->category, cats[c])) known = 1, (f->held_out ? held : train)[c]++;
        if (!strcmp(f->category, "classify")) {
            known = 1, classify++;
            CHECK(!f->held_out && f->answer == TTT_ANSWER_WORD);
        }
        CHECK_MSG(known, "%s: category %s", f->name, f->category);
        CHECK(f->answer == TTT_ANSWER_NUMBER || f->answer == TTT_ANSWER_CHOICE || f->answer == TTT_ANSWER_WORD);
    }
    for (int c = 0; c < 3; c++) CHECK_MSG(train[c] >= 1 && held[c] >= 1, "%s: %d training, %d held-out", cats[c], train[c], held[c]);
    CHECK(classify == 1);
    CHECK(ttt_task_family_at(-1) == NULL && ttt_task_family_at(n) == NULL);
    CHECK(ttt_task_family_find("nope") == NULL && ttt_task_family_find(NULL) == NULL);
    CHECK(!strcmp(ttt_task_split_name(TTT_SPLIT_TRAIN), "train") && !strcmp(ttt_task_split_name(TTT_SPLIT_VAL), "val") &&
          !strcmp(ttt_task_split_name(TTT_SPLIT_TEST), "test") && ttt_task_split_name(3) == NULL && ttt_task_split_name(-1) == NULL);
    CHECK(ttt_task_split_parse("train") == 0 && ttt_task_split_parse("val") == 1 && ttt_task_split_parse("test") == 2);
    CHECK(ttt_task_split_parse("Train") == -1 && ttt_task_split_parse("") == -1 && ttt_task_split_parse(NULL) == -1);
    CHECK(!strcmp(ttt_answer_kind_name(TTT_ANSWER_NUMBER), "number") && !strcmp(ttt_answer_kind_name(TTT_ANSWER_CHOICE), "choice") &&
          !strcmp(ttt_answer_kind_name(TTT_ANSWER_WORD), "word"));
}

/* ---- determinism and disjoint splits --------------------------------------------------------- */

static void test_determinism(void) {
    char err[256];
    for (int i = 0; i < ttt_task_family_count(); i++) {
        const char *name = ttt_task_family_at(i)->name;
        for (int split = 0; split < 3; split++)
            for (int64_t k = 0; k < 40; k++) {
                const int64_t idx = k < 30 ? k : (int64_t)1 << (k + 2); /* far indices too */
                ttt_task_example a, b;
                int ra = ttt_task_generate(name, split, idx, &a, err, sizeof err);
                int rb = ttt_task_generate(name, split, idx, &b, err, sizeof err);
                CHECK_MSG(ra == TTT_OK && rb == TTT_OK, "%s %d %lld: %s", name, split, (long long)idx, err);
                if (ra == TTT_OK && rb == TTT_OK) {
                    CHECK_MSG(!strcmp(a.prompt, b.prompt) && !strcmp(a.answer, b.answer), "%s %d %lld", name, split, (long long)idx);
                    CHECK(strlen(a.prompt) > 20 && strlen(a.answer) > 0);
                }
                ttt_task_example_free(&a), ttt_task_example_free(&b);
                CHECK(a.prompt == NULL && a.answer == NULL);
            }
    }
    ttt_task_example_free(NULL);
}

/* The first 100 train examples of each family hash to these values: a change of any generator
 * changes every experiment's data, so it must be deliberate (update the value and docs/tasks.md). */
static void test_pinned(void) {
    static const struct {
        const char *family;
        uint64_t hash;
    } PINNED[] = {
        {"arith", 0xf9f0616572d25f51ull},       {"py-output", 0x8770e37db599dcd2ull}, {"facts-mc", 0x5bf003b3a299115dull},
        {"arith-money", 0xe0d96e3871648bfcull}, {"py-string", 0xcd336864b52aab3full}, {"facts-color", 0x16848ccd7c723fe7ull},
        {"classify", 0xce1fb62c1fd196dbull},
    };
    char err[256];
    for (size_t i = 0; i < sizeof PINNED / sizeof PINNED[0]; i++) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (int64_t k = 0; k < 100; k++) {
            ttt_task_example ex;
            if (ttt_task_generate(PINNED[i].family, TTT_SPLIT_TRAIN, k, &ex, err, sizeof err) != TTT_OK) break;
            h = fnv(fnv(h, ex.prompt), ex.answer);
            ttt_task_example_free(&ex);
        }
        CHECK_MSG(h == PINNED[i].hash, "%s: the first 100 train examples hash to 0x%016llxull, pinned 0x%016llxull",
                  PINNED[i].family, (unsigned long long)h, (unsigned long long)PINNED[i].hash);
    }
    CHECK(sizeof PINNED / sizeof PINNED[0] == (size_t)ttt_task_family_count());
}

/* an open-addressing set of prompts, each with the splits it was seen in */
typedef struct {
    char **key;
    int *splits;
    size_t cap, n;
} prompt_set;

static int set_add(prompt_set *s, char *key, int split) { /* takes key; returns the split bits seen before */
    size_t h = (size_t)fnv(0xcbf29ce484222325ull, key) & (s->cap - 1);
    while (s->key[h] && strcmp(s->key[h], key)) h = (h + 1) & (s->cap - 1);
    if (s->key[h]) {
        free(key);
        const int before = s->splits[h];
        s->splits[h] |= 1 << split;
        return before;
    }
    s->key[h] = key, s->splits[h] = 1 << split, s->n++;
    return 0;
}

static void test_disjoint(void) {
    enum { PER_SPLIT = 2000 };
    char err[256];
    for (int i = 0; i < ttt_task_family_count(); i++) {
        const char *name = ttt_task_family_at(i)->name;
        prompt_set s = {calloc(16384, sizeof(char *)), calloc(16384, sizeof(int)), 16384, 0};
        int distinct[3] = {0}, clashes = 0;
        for (int split = 0; split < 3; split++)
            for (int64_t k = 0; k < PER_SPLIT; k++) {
                ttt_task_example ex;
                if (ttt_task_generate(name, split, k, &ex, err, sizeof err) != TTT_OK) {
                    CHECK_MSG(0, "%s: %s", name, err);
                    continue;
                }
                const int before = set_add(&s, ex.prompt, split);
                if (before & ~(1 << split)) clashes++;
                if (!(before & (1 << split))) distinct[split]++;
                free(ex.answer);
            }
        CHECK_MSG(clashes == 0, "%s: %d prompts in two splits", name, clashes);
        /* every split has some variety: a held-out split of the smallest family keeps over 300 distinct prompts */
        for (int split = 0; split < 3; split++) CHECK_MSG(distinct[split] > 300, "%s %s: %d distinct prompts", name, ttt_task_split_name(split), distinct[split]);
        printf("%-12s distinct prompts in 2000 a split: train %d, val %d, test %d\n", name, distinct[0], distinct[1], distinct[2]);
        for (size_t h = 0; h < s.cap; h++) free(s.key[h]);
        free(s.key), free(s.splits);
    }
}

/* ---- independent answers --------------------------------------------------------------------- */

/* the integers of s, in order */
static int numbers(const char *s, int *out, int max) {
    int n = 0;
    for (const char *p = s; *p && n < max; p++)
        if (isdigit((unsigned char)*p) && (p == s || !isalnum((unsigned char)p[-1]))) {
            out[n++] = (int)strtol(p, NULL, 10);
            while (isdigit((unsigned char)p[1])) p++;
        }
    return n;
}

static int arith_answer(const char *prompt) {
    int v[4];
    if (numbers(prompt, v, 4) != 2) return -1000;
    if (strstr(prompt, " more ") || strstr(prompt, "together")) return v[0] + v[1];
    if (strstr(prompt, " gives ") || strstr(prompt, " takes ")) return v[0] - v[1];
    return -1000;
}

static int money_answer(const char *prompt) {
    int v[5];
    const int n = numbers(prompt, v, 5);
    if (n == 3 && strstr(prompt, "How many dollars does") && strstr(prompt, " pay?")) return v[2] * v[0] + v[1]; /* costs x, y; buys k */
    if (n == 3 && strstr(prompt, "have left?")) return v[0] - v[1] - v[2];
    if (n == 3 && strstr(prompt, "change")) return v[2] - v[0] * v[1]; /* buys k at x each, a b-dollar bill */
    return -1000;
}

/* A tiny Python: int and str values; NAME = E, NAME += E, for NAME in range(N) / [a, b, ...]:
 * with an indented body, print(E); E has + - * (the usual precedence), len(), .upper(),
 * [i] with negative i, string literals. Enough for what the code families write. */
typedef struct {
    int is_str, i;
    char s[64];
} pyval;
typedef struct {
    char name[16];
    pyval v;
} pyvar;
typedef struct {
    pyvar vars[16];
    int n_vars, bad;
    char out[256];
} pyenv;

static pyval *py_var(pyenv *e, const char *name, size_t n, int create) {
    for (int i = 0; i < e->n_vars; i++)
        if (strlen(e->vars[i].name) == n && !strncmp(e->vars[i].name, name, n)) return &e->vars[i].v;
    if (!create || e->n_vars == 16 || n >= 16) return e->bad = 1, NULL;
    memcpy(e->vars[e->n_vars].name, name, n);
    e->vars[e->n_vars].name[n] = 0;
    return &e->vars[e->n_vars++].v;
}

static void py_ws(const char **p) {
    while (**p == ' ') (*p)++;
}
static pyval py_expr(pyenv *e, const char **p);

static pyval py_primary(pyenv *e, const char **p) {
    pyval v = {0};
    py_ws(p);
    if (**p == '"') {
        const char *end = strchr(*p + 1, '"');
        if (!end || end - *p - 1 >= 64) return e->bad = 1, v;
        v.is_str = 1;
        memcpy(v.s, *p + 1, (size_t)(end - *p - 1));
        *p = end + 1;
    } else if (isdigit((unsigned char)**p) || **p == '-') {
        char *end;
        v.i = (int)strtol(*p, &end, 10);
        *p = end;
    } else if (!strncmp(*p, "len(", 4)) {
        *p += 4;
        pyval a = py_expr(e, p);
        if (**p != ')' || !a.is_str) return e->bad = 1, v;
        (*p)++;
        v.i = (int)strlen(a.s);
    } else if (isalpha((unsigned char)**p)) {
        const char *s = *p;
        while (isalnum((unsigned char)**p) || **p == '_') (*p)++;
        pyval *var = py_var(e, s, (size_t)(*p - s), 0);
        if (var) v = *var;
    } else {
        e->bad = 1;
    }
    for (;;) { /* postfix: [i], .upper() */
        if (**p == '[') {
            (*p)++;
            pyval i = py_expr(e, p);
            if (**p != ']' || !v.is_str || i.is_str) return e->bad = 1, v;
            (*p)++;
            const int len = (int)strlen(v.s), at = i.i < 0 ? len + i.i : i.i;
            if (at < 0 || at >= len) return e->bad = 1, v;
            v.s[0] = v.s[at], v.s[1] = 0;
        } else if (!strncmp(*p, ".upper()", 8) && v.is_str) {
            *p += 8;
            for (char *c = v.s; *c; c++) *c = (char)toupper((unsigned char)*c);
        } else {
            return v;
        }
    }
}

static pyval py_term(pyenv *e, const char **p) {
    pyval v = py_primary(e, p);
    for (py_ws(p); **p == '*'; py_ws(p)) {
        (*p)++;
        pyval b = py_primary(e, p);
        if (b.is_str) return e->bad = 1, v;
        if (v.is_str) { /* repetition */
            char rep[64] = "";
            for (int k = 0; k < b.i && strlen(rep) + strlen(v.s) < 64; k++) strcat(rep, v.s);
            strcpy(v.s, rep);
        } else {
            v.i *= b.i;
        }
    }
    return v;
}

static pyval py_expr(pyenv *e, const char **p) {
    pyval v = py_term(e, p);
    for (py_ws(p); **p == '+' || **p == '-'; py_ws(p)) {
        const char op = *(*p)++;
        pyval b = py_term(e, p);
        if (v.is_str != b.is_str || (v.is_str && op == '-')) return e->bad = 1, v;
        if (!v.is_str) v.i = op == '+' ? v.i + b.i : v.i - b.i;
        else if (strlen(v.s) + strlen(b.s) < 64) strcat(v.s, b.s);
        else e->bad = 1;
    }
    return v;
}

static void py_line(pyenv *e, const char *line) {
    const char *p = line;
    if (!strncmp(p, "print(", 6)) {
        p += 6;
        pyval v = py_expr(e, &p);
        if (strcmp(p, ")")) e->bad = 1;
        if (v.is_str) snprintf(e->out, sizeof e->out, "%s", v.s);
        else snprintf(e->out, sizeof e->out, "%d", v.i);
        return;
    }
    const char *s = p;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    const size_t n = (size_t)(p - s);
    py_ws(&p);
    const int add = !strncmp(p, "+=", 2);
    if (!n || (!add && *p != '=')) {
        e->bad = 1;
        return;
    }
    p += add ? 2 : 1;
    pyval v = py_expr(e, &p);
    if (*p) e->bad = 1;
    pyval *var = py_var(e, s, n, 1);
    if (!var) return;
    if (add && !var->is_str && !v.is_str) var->i += v.i;
    else if (add) e->bad = 1;
    else *var = v;
}

/* Runs the code between "```python\n" and "\n```"; the printed text, or NULL if it cannot. */
static const char *py_run(pyenv *e, const char *prompt) {
    memset(e, 0, sizeof *e);
    const char *start = strstr(prompt, "```python\n"), *end = start ? strstr(start + 10, "\n```") : NULL;
    if (!end) return NULL;
    char code[1024];
    snprintf(code, sizeof code, "%.*s", (int)(end - start - 10), start + 10);
    char *lines[16];
    int n = 0;
    for (char *l = strtok(code, "\n"); l && n < 16; l = strtok(NULL, "\n")) lines[n++] = l;
    for (int i = 0; i < n && !e->bad; i++) {
        if (strncmp(lines[i], "for ", 4)) {
            py_line(e, lines[i]);
            continue;
        }
        char var[16];
        int range = -1, items[8], n_items = 0, len = 0;
        if (sscanf(lines[i], "for %15s in range(%d):", var, &range) == 2) {
            for (int k = 0; k < range && k < 8; k++) items[n_items++] = k;
        } else if (sscanf(lines[i], "for %15s in [%n", var, &len) == 1 && len > 0) {
            for (const char *q = lines[i] + len; *q && *q != ']' && n_items < 8;) {
                char *after;
                items[n_items++] = (int)strtol(q, &after, 10);
                q = after;
                while (*q == ',' || *q == ' ') q++;
            }
        } else {
            e->bad = 1;
            break;
        }
        int body = i + 1;
        while (body < n && !strncmp(lines[body], "    ", 4)) body++;
        for (int k = 0; k < n_items && !e->bad; k++) {
            pyval *it = py_var(e, var, strlen(var), 1);
            if (!it) break;
            it->is_str = 0, it->i = items[k];
            for (int b = i + 1; b < body; b++) py_line(e, lines[b] + 4);
        }
        i = body - 1;
    }
    return e->bad ? NULL : e->out;
}

/* The option letter whose text is want, in "\nX) text" lines. */
static char option_of(const char *prompt, const char *want) {
    char pat[160];
    for (char c = 'A'; c <= 'D'; c++) {
        snprintf(pat, sizeof pat, "\n%c) %s\n", c, want);
        if (strstr(prompt, pat)) return c;
    }
    return '?';
}

/* "P is REL than Q." facts of facts-mc: the person no fact puts below (the most) or above (the least). */
static char facts_mc_answer(const char *prompt) {
    static const char *const MORE[] = {"taller", "older", "faster", "heavier", "stronger"},
                             *const LESS[] = {"shorter", "younger", "slower", "lighter", "weaker"},
                             *const MOST[] = {"tallest", "oldest", "fastest", "heaviest", "strongest"},
                             *const LEAST[] = {"shortest", "youngest", "slowest", "lightest", "weakest"};
    char hi[2][32], lo[2][32]; /* fact f: hi[f] is more than lo[f] */
    const char *p = prompt;
    for (int f = 0; f < 2; f++) {
        char a[32], rel[32], b[32];
        int used = 0;
        if (sscanf(p, "%31s is %31s than %31[A-Za-z].%n", a, rel, b, &used) != 3 || !used) return '?';
        p += used;
        while (*p == ' ') p++;
        int more = -1;
        for (int r = 0; r < 5; r++) more = !strcmp(rel, MORE[r]) ? 1 : !strcmp(rel, LESS[r]) ? 0 : more;
        if (more < 0) return '?';
        strcpy(hi[f], more ? a : b), strcpy(lo[f], more ? b : a);
    }
    char q[32];
    if (sscanf(p, "Who is the %31[a-z]?", q) != 1) return '?';
    int most = -1;
    for (int r = 0; r < 5; r++) most = !strcmp(q, MOST[r]) ? 1 : !strcmp(q, LEAST[r]) ? 0 : most;
    if (most < 0) return '?';
    /* the most: a hi that is no lo; the least: a lo that is no hi */
    for (int f = 0; f < 2; f++) {
        const char *cand = most ? hi[f] : lo[f];
        int other = 0;
        for (int g = 0; g < 2; g++) other |= !strcmp(cand, most ? lo[g] : hi[g]);
        if (!other) return option_of(prompt, cand);
    }
    return '?';
}

static char facts_color_answer(const char *prompt) {
    const char *q = strstr(prompt, "What color is ");
    char who[32], thing[32];
    if (!q || sscanf(q, "What color is %31[A-Za-z]'s %31[a-z]?", who, thing) != 2) return '?';
    char pat[64], color[32];
    snprintf(pat, sizeof pat, "%s has ", who); /* "Ann has a red hat." / "Ann has an orange hat." */
    const char *f = strstr(prompt, pat);
    if (!f || sscanf(f + strlen(pat), "%*s %31s", color) != 1) return '?';
    return option_of(prompt, color);
}

static void test_answers(void) {
    char err[256];
    int bad = 0, tried = 0, cats[3] = {0};
    for (int i = 0; i < ttt_task_family_count(); i++) {
        const ttt_task_family *fam = ttt_task_family_at(i);
        for (int split = 0; split < 3; split++)
            for (int64_t k = 0; k < 300; k++) {
                ttt_task_example ex;
                if (ttt_task_generate(fam->name, split, k, &ex, err, sizeof err) != TTT_OK) {
                    CHECK_MSG(0, "%s", err);
                    continue;
                }
                char want[300] = "";
                pyenv env;
                const char *out;
                if (!strcmp(fam->name, "arith")) snprintf(want, sizeof want, "%d", arith_answer(ex.prompt));
                else if (!strcmp(fam->name, "arith-money")) snprintf(want, sizeof want, "%d", money_answer(ex.prompt));
                else if (!strcmp(fam->name, "py-output") || !strcmp(fam->name, "py-string"))
                    snprintf(want, sizeof want, "%s", (out = py_run(&env, ex.prompt)) ? out : "(cannot run)");
                else if (!strcmp(fam->name, "facts-mc")) snprintf(want, sizeof want, "%c", facts_mc_answer(ex.prompt));
                else if (!strcmp(fam->name, "facts-color")) snprintf(want, sizeof want, "%c", facts_color_answer(ex.prompt));
                else if (!strcmp(fam->name, "classify")) {
                    /* the wrapped prompt is one of a training family of that category, in the same template */
                    const char *open = strstr(ex.prompt, "\"\"\"\n"), *close = open ? strstr(open + 4, "\n\"\"\"") : NULL;
                    char inner[2048] = "";
                    if (close) snprintf(inner, sizeof inner, "%.*s", (int)(close - open - 4), open + 4);
                    char *again = ttt_task_classify_prompt(inner);
                    CHECK(again && !strcmp(again, ex.prompt));
                    free(again);
                    const char *cat = strstr(inner, "```python") ? "code" : strstr(inner, "\nA) ") ? "reasoning" : "math";
                    snprintf(want, sizeof want, "%s", cat);
                    cats[!strcmp(cat, "math") ? 0 : !strcmp(cat, "code") ? 1 : 2]++;
                    /* never a held-out family's prompt: theirs have prices, strings or colors */
                    CHECK_MSG(!strstr(inner, "dollar") && !strstr(inner, "\"") && !strstr(inner, "What color"), "%s", inner);
                } else {
                    CHECK_MSG(0, "no independent answer for family %s: add one", fam->name);
                }
                tried++;
                if (strcmp(want, ex.answer)) {
                    if (bad++ < 5) fprintf(stderr, "%s: the answer %s, recomputed %s, of:\n%s\n", fam->name, ex.answer, want, ex.prompt);
                }
                CHECK(ttt_task_check(fam, ex.answer, ex.answer)); /* the answer itself passes its checker */
                ttt_task_example_free(&ex);
            }
    }
    CHECK_MSG(bad == 0, "%d of %d answers differ from the recomputed ones", bad, tried);
    /* classify: the three categories about equally often (900 examples: a third is 300) */
    for (int c = 0; c < 3; c++) CHECK_MSG(cats[c] > 220 && cats[c] < 380, "category %d: %d of 900", c, cats[c]);
}

/* ---- the checker ----------------------------------------------------------------------------- */

static void test_checker(void) {
    const ttt_task_family *num = ttt_task_family_find("arith"), *mc = ttt_task_family_find("facts-mc"),
                          *word = ttt_task_family_find("py-string"), *cls = ttt_task_family_find("classify");
    CHECK(num && num->answer == TTT_ANSWER_NUMBER && mc && mc->answer == TTT_ANSWER_CHOICE && word && word->answer == TTT_ANSWER_WORD && cls);
    if (!num || !mc || !word || !cls) return;
    static const struct {
        int kind; /* 0 number, 1 choice, 2 word, 3 classify */
        const char *expected, *output;
        int want;
    } CASES[] = {
        /* numbers */
        {0, "12", "12", 1},
        {0, "12", "  12\n", 1},
        {0, "12", "12.", 1},
        {0, "12", "The answer is 12.", 1},
        {0, "12", "the answer is: 12", 1},
        {0, "12", "Answer: 12 apples", 1},
        {0, "12", "**Answer:** 12", 1},
        {0, "12", "Tom has 12 apples now.", 1},
        {0, "12", "This Python code will print 12.", 1},
        {0, "12", "It is 12", 1},
        {0, "12", "7 + 5 = 12", 1},           /* operands of the working are not answers */
        {0, "12", "Tom has 7 + 5 = 12 apples.", 1},
        {0, "12", "7+5=12", 1},
        {0, "12", "(7 + 5) = 12", 1},
        {0, "12", "7 (Mia) + 5 (Emma) = 12", 1},
        {0, "12", "3 x 4 = 12", 1},
        {0, "12", "12.0", 1},
        {0, "12", "012", 1},
        {0, "1234", "1,234", 1},
        {0, "1234", "1,2345", 0},
        {0, "-3", "-3", 1},
        {0, "-3", "x = -3", 1},
        {0, "3", "-3", 0},
        {0, "-3", "3", 0},
        {0, "12", "12.5", 0},
        {0, "12", "11 or 12", 0},               /* the first answer counts */
        {0, "12", "The answer is 11. No, 12.", 0},
        {0, "12", "7 + 5 = 13, so 12", 0},
        {0, "12", "There are 7 apples. 7 + 5 = 12", 0},
        {0, "12", "x12 is 12", 1},             /* digits inside a word are not a number */
        {0, "12", "", 0},
        {0, "12", "twelve", 0},
        {0, "12", "3 xylophones and 12", 0},
        {0, "5", "The box has 15 - 5 = 10.", 0},
        {0, "0", "0", 1},
        {0, "0", "-0", 1},
        /* choices */
        {1, "B", "B", 1},
        {1, "B", "B)", 1},
        {1, "B", "(B)", 1},
        {1, "B", "B) Bob", 1},
        {1, "B", "Answer: B", 1},
        {1, "B", "The answer is B.", 1},
        {1, "B", "The correct answer is B) Bob.", 1},
        {1, "B", "  b)", 1},
        {1, "B", "(b) Bob", 1},
        {1, "B", "Bob", 0},                    /* a name that starts with the letter is no choice */
        {1, "B", "A) Alice\nThe answer is B.", 0},
        {1, "B", "A or B", 0},
        {1, "B", "Because Bob is taller, B.", 1},
        {1, "A", "Alice", 0},
        {1, "A", "Answer: A", 1},
        {1, "A", "", 0},
        {1, "D", "D.", 1},
        {1, "C", "E", 0},
        {1, "C", "It is C.", 1},
        {1, "C", "This is a C", 1},  /* the article after "This is" is passed over */
        {1, "C", "A C", 0},
        /* words */
        {2, "CAT", "CAT", 1},
        {2, "CAT", "cat", 1},
        {2, "CAT", "  \"CAT\".\n", 1},
        {2, "CAT", "'CAT'", 1},
        {2, "CAT", "`CAT`", 1},
        {2, "CAT", "```\nCAT\n```", 1},
        {2, "CAT", "```python\nCAT\n```", 1},
        {2, "CAT", "The output is CAT.", 1},
        {2, "CAT", "Output: CAT", 1},
        {2, "CAT", "This Python code will print CAT.", 1},
        {2, "CAT", "The code prints `CAT`", 1},
        {2, "CAT", "The output of this code is CAT", 0}, /* "The" is the first word */
        {2, "CAT", "CATS", 0},
        {2, "CAT", "CA", 0},
        {2, "CAT", "DOG CAT", 0},
        {2, "CAT", "", 0},
        {2, "5", "5", 1},
        {2, "5", "5.", 1},
        {2, "a", "a", 1},
        {2, "catdog", "catdog", 1},
        {2, "catdog", "cat dog", 0},
        {2, "two words", "Two words.", 1},  /* a multi-word answer: the first line */
        {2, "two words", "two", 0},
        /* classify */
        {3, "math", "math", 1},
        {3, "math", "Math.", 1},
        {3, "math", "**Math**", 1},
        {3, "math", "The answer is math.", 1},
        {3, "math", "math\nreasoning", 1},
        {3, "math", "reasoning, not math", 0},
        {3, "code", "Code", 1},                  /* a noun of the prefixes, alone, is an answer */
        {3, "code", "Code.", 1},
        {3, "math", "This is a math task.", 1},  /* the form the classify prompt asks for */
        {3, "math", "It is math.", 1},
        {3, "math", "It's math", 1},
        {3, "math", "The task is math.", 1},
        {3, "math", "The category is: Math", 1},
        {3, "math", "Task: math", 1},
        {3, "math", "This Python code is a math task.", 1},
        {3, "code", "This Python code is a math task.", 0},
        {3, "math", "This task is a mix of math and reasoning.", 0},
        {3, "math", "This task requires math.", 0},
        {3, "math", "It math", 0},
        {3, "reasoning", "Reasoning!", 1},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const ttt_task_family *f = CASES[i].kind == 0 ? num : CASES[i].kind == 1 ? mc : CASES[i].kind == 2 ? word : cls;
        CHECK_MSG(ttt_task_check(f, CASES[i].expected, CASES[i].output) == CASES[i].want, "%s: expected %s, output \"%s\": wanted %s",
                  f->name, CASES[i].expected, CASES[i].output, CASES[i].want ? "correct" : "wrong");
    }
    char buf[16];
    CHECK(ttt_task_extract(TTT_ANSWER_NUMBER, "Tom has 4 + 3 = 7 apples", buf, sizeof buf) == 1 && !strcmp(buf, "7"));
    CHECK(ttt_task_extract(TTT_ANSWER_CHOICE, "The answer is (c)", buf, sizeof buf) == 1 && !strcmp(buf, "C"));
    CHECK(ttt_task_extract(TTT_ANSWER_WORD, "Answer: \"Reasoning\".", buf, sizeof buf) == 1 && !strcmp(buf, "Reasoning"));
    CHECK(ttt_task_extract(TTT_ANSWER_NUMBER, "no number", buf, sizeof buf) == 0 && !strcmp(buf, ""));
    CHECK(ttt_task_extract(TTT_ANSWER_WORD, "abcdefghijklmnopqrstuvwxyz", buf, 4) == 1 && !strcmp(buf, "abc")); /* truncated */
    CHECK(ttt_task_extract(TTT_ANSWER_WORD, NULL, buf, sizeof buf) == 0);
    CHECK(ttt_task_check(NULL, "1", "1") == 0 && ttt_task_check(num, NULL, "1") == 0 && ttt_task_check(num, "1", NULL) == 0);
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void test_errors(void) {
    char err[256];
    ttt_task_example ex = {(char *)1, (char *)1};
    CHECK(ttt_task_generate("nope", TTT_SPLIT_TRAIN, 0, &ex, err, sizeof err) == TTT_ERR);
    CHECK_MSG(strstr(err, "unknown task family 'nope'") && strstr(err, "arith"), "%s", err);
    CHECK(ex.prompt == NULL && ex.answer == NULL);
    CHECK(ttt_task_generate(NULL, TTT_SPLIT_TRAIN, 0, &ex, err, sizeof err) == TTT_ERR && strstr(err, "unknown task family"));
    CHECK(ttt_task_generate("arith", 3, 0, &ex, err, sizeof err) == TTT_ERR);
    CHECK_MSG(strstr(err, "split 3"), "%s", err);
    CHECK(ttt_task_generate("arith", -1, 0, &ex, err, sizeof err) == TTT_ERR && strstr(err, "split -1"));
    CHECK(ttt_task_generate("arith", TTT_SPLIT_TEST, -1, &ex, err, sizeof err) == TTT_ERR);
    CHECK_MSG(strstr(err, "index -1") && strstr(err, "negative"), "%s", err);
    CHECK(ex.prompt == NULL && ex.answer == NULL);
    CHECK(ttt_task_generate("arith", TTT_SPLIT_TRAIN, 0, NULL, err, sizeof err) == TTT_ERR && strstr(err, "no output"));
    CHECK(ttt_task_generate("arith", 7, 0, &ex, NULL, 0) == TTT_ERR); /* no message buffer: still an error */
    CHECK(ttt_task_generate("arith", TTT_SPLIT_TRAIN, INT64_MAX, &ex, err, sizeof err) == TTT_OK);
    ttt_task_example_free(&ex);
    CHECK(ttt_task_classify_prompt(NULL) == NULL);
}

int main(void) {
    test_table();
    test_determinism();
    test_pinned();
    test_disjoint();
    test_answers();
    test_checker();
    test_errors();
    TEST_MAIN_END();
}
