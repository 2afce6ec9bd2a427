/* Task families with verifiable answers (include/ttt/tasks.h, docs/tasks.md).
 * Each family is a generator that draws from a splitmix64 stream and writes a
 * prompt and its answer; ttt_task_generate seeds the stream from (family,
 * split, index, attempt) and keeps the first draw whose prompt hashes into the
 * requested split. The checker reads the first answer of a model's output by
 * the family's answer kind. The content is sized for a 135M instruct model:
 * numbers below 20, two- to four-line programs, three-person comparisons. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/engine_private.h"
#include "ttt/tasks.h"

/* ---- the random stream ---------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t next_u64(rng *r) { return mix64(r->s += 0x9e3779b97f4a7c15ull); }
/* uniform in [0, n) (n small: the modulo bias is below 2^-50) */
static int pick(rng *r, int n) { return (int)(next_u64(r) % (uint64_t)n); }
static int between(rng *r, int lo, int hi) { return lo + pick(r, hi - lo + 1); } /* inclusive */
/* k distinct values of [0, n) in random order into out (k <= n <= 64) */
static void distinct(rng *r, int n, int k, int *out) {
    int all[64];
    for (int i = 0; i < n; i++) all[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + pick(r, n - i), t = all[i];
        all[i] = all[j], all[j] = t;
        out[i] = all[i];
    }
}

/* ---- text ----------------------------------------------------------------------------------- */

enum { TEXT_CAP = 4096 };
typedef struct {
    char s[TEXT_CAP];
    size_t n;
    int overflow;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (t->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->s + t->n, TEXT_CAP - t->n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= TEXT_CAP - t->n) t->overflow = 1;
    else t->n += (size_t)k;
}

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct {
    const char *name;
    int she;
} PEOPLE[] = {{"Alice", 1}, {"Bob", 0},  {"Carl", 0}, {"Dana", 1},  {"Emma", 1}, {"Frank", 0}, {"Grace", 1},
              {"Henry", 0}, {"Ivy", 1},  {"Jack", 0}, {"Kate", 1},  {"Leo", 0},  {"Mia", 1},   {"Nick", 0},
              {"Olivia", 1}, {"Paul", 0}, {"Rosa", 1}, {"Sam", 0},  {"Tina", 1}, {"Tom", 0}};
static const char *const OBJECTS[] = {"apples", "books", "pens", "cookies", "marbles", "stickers",
                                      "cards", "balls", "shells", "flowers", "toys",   "pencils"};
static const char *pronoun(int person) { return PEOPLE[person].she ? "She" : "He"; }

/* ---- math ------------------------------------------------------------------------------------ */

static void gen_arith(rng *r, int split, text *p, text *a) {
    (void)split;
    int who[2];
    distinct(r, COUNT(PEOPLE), 2, who);
    const char *n = PEOPLE[who[0]].name, *m = PEOPLE[who[1]].name, *obj = OBJECTS[pick(r, COUNT(OBJECTS))];
    const int x = between(r, 3, 19); /* every count in the text is at least 2: no singular nouns */
    int y, ans;
    switch (pick(r, 4)) {
    case 0:
        y = between(r, 2, 19), ans = x + y;
        put(p, "%s has %d %s. %s gets %d more %s. How many %s does %s have now?", n, x, obj, pronoun(who[0]), y, obj, obj, n);
        break;
    case 1:
        y = between(r, 2, 19), ans = x + y;
        put(p, "%s has %d %s and %s has %d %s. How many %s do they have together?", n, x, obj, m, y, obj, obj);
        break;
    case 2:
        y = between(r, 2, x - 1), ans = x - y;
        put(p, "%s has %d %s. %s gives %d %s to %s. How many %s does %s have left?", n, x, obj, pronoun(who[0]), y, obj,
            m, obj, n);
        break;
    default:
        y = between(r, 2, x - 1), ans = x - y;
        put(p, "There are %d %s in a box. %s takes %d %s out of the box. How many %s are left in the box?", x, obj, n, y,
            obj, obj);
        break;
    }
    put(p, "\nAnswer with a number only.");
    put(a, "%d", ans);
}

static const struct {
    const char *one, *many;
} ITEMS[] = {{"pen", "pens"}, {"notebook", "notebooks"}, {"cookie", "cookies"}, {"ball", "balls"},
             {"sticker", "stickers"}, {"apple", "apples"}, {"cup", "cups"}, {"kite", "kites"}};

static void gen_arith_money(rng *r, int split, text *p, text *a) {
    (void)split;
    const int who = pick(r, COUNT(PEOPLE));
    const char *n = PEOPLE[who].name;
    int it[2];
    distinct(r, COUNT(ITEMS), 2, it);
    int ans;
    switch (pick(r, 3)) {
    case 0: {
        const int k = between(r, 2, 4), x = between(r, 2, 9), y = between(r, 2, 9);
        ans = k * x + y;
        put(p, "A %s costs %d dollars and a %s costs %d dollars. %s buys %d %s and one %s. How many dollars does %s pay?",
            ITEMS[it[0]].one, x, ITEMS[it[1]].one, y, n, k, ITEMS[it[0]].many, ITEMS[it[1]].one, n);
        break;
    }
    case 1: {
        const int x = between(r, 2, 9), y = between(r, 2, 9), have = between(r, x + y, 30);
        ans = have - x - y;
        put(p, "%s has %d dollars. %s buys a %s for %d dollars and a %s for %d dollars. How many dollars does %s have left?",
            n, have, pronoun(who), ITEMS[it[0]].one, x, ITEMS[it[1]].one, y, n);
        break;
    }
    default: {
        const int k = between(r, 2, 4), x = between(r, 2, 9), bill = k * x < 20 ? (pick(r, 2) ? 20 : 50) : 50;
        ans = bill - k * x;
        put(p, "%s buys %d %s that cost %d dollars each and pays with a %d-dollar bill. How many dollars of change does %s get?",
            n, k, ITEMS[it[0]].many, x, bill, PEOPLE[who].she ? "she" : "he");
        break;
    }
    }
    put(p, "\nAnswer with a number only.");
    put(a, "%d", ans);
}

/* ---- code ------------------------------------------------------------------------------------ */

static const char *const VARS[] = {"a", "b", "x", "y", "n", "m", "k", "count"};
static const char *const ACCS[] = {"total", "s", "result", "acc"};

static void code_prompt(text *p, const text *code, const char *instruction) {
    put(p, "What does this Python code print?\n\n```python\n%s\n```\n%s", code->s, instruction);
}

static void gen_py_output(rng *r, int split, text *p, text *a) {
    (void)split;
    text c = {.n = 0};
    int v[2];
    distinct(r, COUNT(VARS), 2, v);
    const char *x = VARS[v[0]], *y = VARS[v[1]], *acc = ACCS[pick(r, COUNT(ACCS))];
    int ans;
    switch (pick(r, 7)) {
    case 5: { /* two variables, one printed */
        const int i = between(r, 1, 15), j = between(r, 1, 15), second = pick(r, 2);
        ans = second ? j : i;
        put(&c, "%s = %d\n%s = %d\nprint(%s)", x, i, y, j, second ? y : x);
        break;
    }
    case 6: { /* arithmetic on literals */
        const int op = pick(r, 3);
        int i = op == 2 ? between(r, 2, 9) : between(r, 1, 15), j = op == 2 ? between(r, 2, 5) : between(r, 1, 9);
        if (op == 1 && j > i) {
            const int t = i;
            i = j, j = t;
        }
        ans = op == 0 ? i + j : op == 1 ? i - j : i * j;
        put(&c, "print(%d %c %d)", i, "+-*"[op], j);
        break;
    }
    case 0: { /* two variables, one operation */
        const int op = pick(r, 3);
        int i = op == 2 ? between(r, 2, 9) : between(r, 1, 15), j = op == 2 ? between(r, 2, 9) : between(r, 1, 15);
        if (op == 1 && j > i) {
            const int t = i;
            i = j, j = t;
        }
        ans = op == 0 ? i + j : op == 1 ? i - j : i * j;
        put(&c, "%s = %d\n%s = %d\nprint(%s %c %s)", x, i, y, j, x, "+-*"[op], y);
        break;
    }
    case 1: { /* a variable updated from itself */
        const int op = pick(r, 3), i = op == 2 ? between(r, 2, 9) : between(r, 4, 15);
        const int j = op == 2 ? between(r, 2, 4) : between(r, 1, op == 1 ? i - 1 : 9);
        ans = op == 0 ? i + j : op == 1 ? i - j : i * j;
        put(&c, "%s = %d\n%s = %s %c %d\nprint(%s)", x, i, x, x, "+-*"[op], j, x);
        break;
    }
    case 2: { /* a second variable from the first */
        const int i = between(r, 1, 12), j = between(r, 1, 9);
        const int sub = pick(r, 2) && j < i;
        ans = sub ? i - j : i + j;
        put(&c, "%s = %d\n%s = %s %c %d\nprint(%s)", x, i, y, x, sub ? '-' : '+', j, y);
        break;
    }
    case 3: { /* a loop adding a constant */
        const int n = between(r, 2, 5), k = between(r, 1, 6);
        ans = n * k;
        if (pick(r, 2)) put(&c, "%s = 0\nfor i in range(%d):\n    %s = %s + %d\nprint(%s)", acc, n, acc, acc, k, acc);
        else put(&c, "%s = 0\nfor i in range(%d):\n    %s += %d\nprint(%s)", acc, n, acc, k, acc);
        break;
    }
    default: { /* a loop summing a short list */
        const int len = between(r, 2, 4);
        int item[4];
        ans = 0;
        put(&c, "%s = 0\nfor %s in [", acc, x);
        for (int i = 0; i < len; i++) {
            item[i] = between(r, 1, 9), ans += item[i];
            put(&c, "%s%d", i ? ", " : "", item[i]);
        }
        put(&c, "]:\n    %s += %s\nprint(%s)", acc, x, acc);
        break;
    }
    }
    if (c.overflow) p->overflow = 1;
    code_prompt(p, &c, "Answer with a number only.");
    put(a, "%d", ans);
}

static const char *const WORDS[] = {"cat",   "dog",   "sun",   "tree",  "book",  "fish",  "bird",  "milk",  "rain",  "lamp",
                                    "star",  "frog",  "apple", "house", "river", "green", "piano", "tiger", "cake",  "moon",
                                    "chair", "bread", "snow",  "ship",  "hat",   "cup",   "pen",   "box",   "door",  "ball",
                                    "lion",  "duck",  "rose",  "leaf",  "road",  "king",  "glass", "cloud", "stone", "plant"};
static const char *const SVARS[] = {"w", "s", "word", "name", "text", "t", "item", "label"};

static void gen_py_string(rng *r, int split, text *p, text *a) {
    (void)split;
    text c = {.n = 0};
    int w[2];
    distinct(r, COUNT(WORDS), 2, w);
    const char *word = WORDS[w[0]], *v = SVARS[pick(r, COUNT(SVARS))];
    const int len = (int)strlen(word);
    switch (pick(r, 6)) {
    case 0:
        put(&c, "%s = \"%s\"\nprint(len(%s))", v, word, v);
        put(a, "%d", len);
        break;
    case 1:
        put(&c, "%s = \"%s\"\nprint(%s.upper())", v, word, v);
        for (int i = 0; i < len; i++) put(a, "%c", toupper((unsigned char)word[i]));
        break;
    case 2: {
        const int i = pick(r, len < 4 ? len : 4);
        put(&c, "%s = \"%s\"\nprint(%s[%d])", v, word, v, i);
        put(a, "%c", word[i]);
        break;
    }
    case 3:
        put(&c, "%s = \"%s\"\nprint(%s[-1])", v, word, v);
        put(a, "%c", word[len - 1]);
        break;
    case 4:
        put(&c, "a = \"%s\"\nb = \"%s\"\nprint(a + b)", word, WORDS[w[1]]);
        put(a, "%s%s", word, WORDS[w[1]]);
        break;
    default:
        put(&c, "%s = \"%s\"\nprint(%s * 2)", v, word, v);
        put(a, "%s%s", word, word);
        break;
    }
    if (c.overflow) p->overflow = 1;
    code_prompt(p, &c, "Answer with the output only.");
}

/* ---- reasoning ------------------------------------------------------------------------------- */

static const struct {
    const char *more, *less, *most, *least;
} RELATIONS[] = {{"taller", "shorter", "tallest", "shortest"},
                 {"older", "younger", "oldest", "youngest"},
                 {"faster", "slower", "fastest", "slowest"},
                 {"heavier", "lighter", "heaviest", "lightest"},
                 {"stronger", "weaker", "strongest", "weakest"}};

static void options(text *p, text *a, const char *const *opt, int n, int right) {
    for (int i = 0; i < n; i++) put(p, "\n%c) %s", 'A' + i, opt[i]);
    put(p, "\nAnswer with the letter only.");
    put(a, "%c", 'A' + right);
}

static void gen_facts_mc(rng *r, int split, text *p, text *a) {
    (void)split;
    int who[3], order[3];
    distinct(r, COUNT(PEOPLE), 3, who); /* who[0] is the most, who[2] the least */
    const int rel = pick(r, COUNT(RELATIONS));
    text fact[2] = {{.n = 0}, {.n = 0}};
    for (int i = 0; i < 2; i++) { /* a fact about (who[i], who[i + 1]), said one way or the other */
        if (pick(r, 3)) put(&fact[i], "%s is %s than %s.", PEOPLE[who[i]].name, RELATIONS[rel].more, PEOPLE[who[i + 1]].name);
        else put(&fact[i], "%s is %s than %s.", PEOPLE[who[i + 1]].name, RELATIONS[rel].less, PEOPLE[who[i]].name);
    }
    const int first = pick(r, 2), most = pick(r, 2);
    put(p, "%s %s Who is the %s?", fact[first].s, fact[1 - first].s, most ? RELATIONS[rel].most : RELATIONS[rel].least);
    distinct(r, 3, 3, order);
    const char *opt[3];
    int right = 0;
    for (int i = 0; i < 3; i++) {
        opt[i] = PEOPLE[who[order[i]]].name;
        if (order[i] == (most ? 0 : 2)) right = i;
    }
    options(p, a, opt, 3, right);
}

static const char *const COLORS[] = {"red", "blue", "green", "yellow", "black", "white", "pink", "orange"};
static const char *const THINGS[] = {"ball", "hat", "kite", "bike", "cup", "scarf", "car", "bag"};

static void gen_facts_color(rng *r, int split, text *p, text *a) {
    (void)split;
    int who[3], col[4], order[4];
    distinct(r, COUNT(PEOPLE), 3, who);
    distinct(r, COUNT(COLORS), 4, col); /* col[3] is said of no one */
    const char *thing = THINGS[pick(r, COUNT(THINGS))];
    for (int i = 0; i < 3; i++)
        put(p, "%s has %s %s %s. ", PEOPLE[who[i]].name, strchr("aeiou", COLORS[col[i]][0]) ? "an" : "a", COLORS[col[i]], thing);
    const int q = pick(r, 3);
    put(p, "What color is %s's %s?", PEOPLE[who[q]].name, thing);
    distinct(r, 4, 4, order);
    const char *opt[4];
    int right = 0;
    for (int i = 0; i < 4; i++) {
        opt[i] = COLORS[col[order[i]]];
        if (order[i] == q) right = i;
    }
    options(p, a, opt, 4, right);
}

/* ---- the table ------------------------------------------------------------------------------- */

typedef void (*gen_fn)(rng *r, int split, text *p, text *a);
static void gen_classify(rng *r, int split, text *p, text *a);

static const struct {
    ttt_task_family f;
    gen_fn gen;
    int own_split; /* the generator keeps the split itself (classify: its inner example's) */
} FAMILIES[] = {
    {{"arith", "math", 0, TTT_ANSWER_NUMBER, "one-step add / subtract word problems, numbers below 20"}, gen_arith, 0},
    {{"py-output", "code", 0, TTT_ANSWER_NUMBER,
      "what a 1-4 line Python program prints: integers in variables, arithmetic, a small for-loop sum"},
     gen_py_output, 0},
    {{"facts-mc", "reasoning", 0, TTT_ANSWER_CHOICE,
      "multiple choice over two comparison facts: who is the tallest / youngest / ... of three (A-C)"},
     gen_facts_mc, 0},
    {{"arith-money", "math", 1, TTT_ANSWER_NUMBER, "two-step word problems with prices: totals, money left, change"},
     gen_arith_money, 0},
    {{"py-string", "code", 1, TTT_ANSWER_WORD, "what a Python program prints on short words: len, upper, indexing, +, *"},
     gen_py_string, 0},
    {{"facts-color", "reasoning", 1, TTT_ANSWER_CHOICE,
      "multiple choice: which color a person's thing has, from three stated facts (A-D)"},
     gen_facts_color, 0},
    {{"classify", "classify", 0, TTT_ANSWER_WORD,
      "which kind a training family's prompt is: math, code or reasoning (trains the dispatch expert)"},
     gen_classify, 1},
};

int ttt_task_family_count(void) { return COUNT(FAMILIES); }
const ttt_task_family *ttt_task_family_at(int i) { return i >= 0 && i < COUNT(FAMILIES) ? &FAMILIES[i].f : NULL; }

static int family_index(const char *name) {
    for (int i = 0; name && i < COUNT(FAMILIES); i++)
        if (!strcmp(FAMILIES[i].f.name, name)) return i;
    return -1;
}
const ttt_task_family *ttt_task_family_find(const char *name) { return ttt_task_family_at(family_index(name)); }

static const char *const SPLITS[] = {"train", "val", "test"};
const char *ttt_task_split_name(int split) { return split >= 0 && split < 3 ? SPLITS[split] : NULL; }
int ttt_task_split_parse(const char *name) {
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, SPLITS[i])) return i;
    return -1;
}
const char *ttt_answer_kind_name(ttt_answer_kind kind) {
    return kind == TTT_ANSWER_NUMBER ? "number" : kind == TTT_ANSWER_CHOICE ? "choice" : kind == TTT_ANSWER_WORD ? "word" : "?";
}

/* ---- generation ------------------------------------------------------------------------------ */

/* A prompt's split: its FNV-1a hash, mixed, in 10 buckets: 0-7 train, 8 val, 9 test. */
static int split_of(const char *prompt) {
    const uint64_t b = mix64(ttt__fnv1a(TTT_FNV_SEED, prompt, strlen(prompt))) % 10;
    return b < 8 ? TTT_SPLIT_TRAIN : b == 8 ? TTT_SPLIT_VAL : TTT_SPLIT_TEST;
}

/* At most this many draws for one example; a held-out split takes 10 on average, and
 * 1000 misses in a row has probability 0.9^1000 ~ 1e-46. */
enum { MAX_ATTEMPTS = 1000 };

/* Example `index` of family fi into p, a (the checks of the public entry done). */
static int generate(int fi, int split, int64_t index, text *p, text *a, char *err, size_t err_len) {
    const char *name = FAMILIES[fi].f.name;
    const uint64_t base = ttt__fnv1a(TTT_FNV_SEED, name, strlen(name));
    for (uint64_t attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        rng r = {mix64(mix64(mix64(base + 0x9e3779b97f4a7c15ull * (uint64_t)(split + 1)) ^ (uint64_t)index) +
                       0xd1b54a32d192ed03ull * attempt)};
        p->n = a->n = 0, p->overflow = a->overflow = 0;
        p->s[0] = a->s[0] = 0;
        FAMILIES[fi].gen(&r, split, p, a);
        if (p->overflow || a->overflow)
            return ttt__errbuf(err, err_len, "task %s: example %lld does not fit %d bytes", name, (long long)index, TEXT_CAP);
        if (FAMILIES[fi].own_split || split_of(p->s) == split) return TTT_OK;
    }
    return ttt__errbuf(err, err_len, "task %s: no %s example after %d draws for index %lld", name, SPLITS[split], MAX_ATTEMPTS,
                       (long long)index);
}

static const char CLASSIFY_HEAD[] = "Here is a task:\n\n\"\"\"\n";
/* The model answers in a sentence whatever it is told; "This is a math task." is read as "math" (the
 * checker passes "This is a"), and SmolLM2-135M-Instruct keeps to this form far more often than to
 * "Answer with one word." (docs/tasks.md). */
static const char CLASSIFY_TAIL[] =
    "\n\"\"\"\n\nWhich kind of task is this: math, code or reasoning? Do not solve it. Reply in the form \"This is a ... task.\"";

static void gen_classify(rng *r, int split, text *p, text *a) {
    /* a category of the training families, uniformly, then one of its families */
    const char *cats[COUNT(FAMILIES)];
    int n_cats = 0;
    for (int i = 0; i < COUNT(FAMILIES); i++) {
        const ttt_task_family *f = &FAMILIES[i].f;
        if (f->held_out || FAMILIES[i].own_split) continue;
        int seen = 0;
        for (int j = 0; j < n_cats; j++) seen |= !strcmp(cats[j], f->category);
        if (!seen) cats[n_cats++] = f->category;
    }
    const char *cat = cats[pick(r, n_cats)];
    int members[COUNT(FAMILIES)], n_members = 0;
    for (int i = 0; i < COUNT(FAMILIES); i++)
        if (!FAMILIES[i].f.held_out && !FAMILIES[i].own_split && !strcmp(FAMILIES[i].f.category, cat)) members[n_members++] = i;
    const int fi = members[pick(r, n_members)];
    const int64_t inner = (int64_t)(next_u64(r) >> 2);
    text ip, ia;
    if (generate(fi, split, inner, &ip, &ia, NULL, 0) != TTT_OK) {
        p->overflow = 1; /* cannot happen (see MAX_ATTEMPTS); reported as an error by the caller */
        return;
    }
    put(p, "%s%s%s", CLASSIFY_HEAD, ip.s, CLASSIFY_TAIL);
    put(a, "%s", cat);
}

int ttt_task_generate(const char *family, int split, int64_t index, ttt_task_example *out, char *err, size_t err_len) {
    if (!out) return ttt__errbuf(err, err_len, "task_generate: no output example");
    out->prompt = out->answer = NULL;
    const int fi = family_index(family);
    if (fi < 0) {
        char known[512] = "";
        for (int i = 0; i < COUNT(FAMILIES); i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", FAMILIES[i].f.name);
        return ttt__errbuf(err, err_len, "unknown task family '%s' (known: %s)", family ? family : "(null)", known);
    }
    if (split < 0 || split > 2)
        return ttt__errbuf(err, err_len, "task %s: split %d is not train (%d), val (%d) or test (%d)", family, split,
                           TTT_SPLIT_TRAIN, TTT_SPLIT_VAL, TTT_SPLIT_TEST);
    if (index < 0) return ttt__errbuf(err, err_len, "task %s: example index %lld is negative", family, (long long)index);
    text *p = malloc(sizeof *p), *a = malloc(sizeof *a);
    int rc = p && a ? generate(fi, split, index, p, a, err, err_len) : ttt__errbuf(err, err_len, "task %s: out of memory", family);
    if (rc == TTT_OK) {
        out->prompt = strdup(p->s), out->answer = strdup(a->s);
        if (!out->prompt || !out->answer) {
            ttt_task_example_free(out);
            rc = ttt__errbuf(err, err_len, "task %s: out of memory", family);
        }
    }
    free(p), free(a);
    return rc;
}

void ttt_task_example_free(ttt_task_example *ex) {
    if (!ex) return;
    free(ex->prompt), free(ex->answer);
    ex->prompt = ex->answer = NULL;
}

char *ttt_task_classify_prompt(const char *prompt) {
    if (!prompt) return NULL;
    const size_t n = strlen(CLASSIFY_HEAD) + strlen(prompt) + strlen(CLASSIFY_TAIL) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", CLASSIFY_HEAD, prompt, CLASSIFY_TAIL);
    return s;
}

/* ---- the checker ----------------------------------------------------------------------------- */

static int is_word_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* strlen(w) when t starts with the word w (case-insensitive, a word boundary after it), else 0 */
static size_t starts_word(const char *t, const char *w) {
    const size_t n = strlen(w);
    return !strncasecmp(t, w, n) && !is_word_char(t[n]) ? n : 0;
}
static const char *skip_spaces(const char *t) {
    while (*t == ' ' || *t == '*') t++;
    return t;
}

/* s past leading whitespace, '*' / '#' (markdown) and the phrases that introduce an answer
 * (case-insensitive, any number of them):
 *   [the|this|final|correct|my] [python] NOUN (VERB | ':' | '=')   "The answer is", "Answer:",
 *        "The output is", "This Python code will print", "The category is", "Task:"
 *   (this|it) (VERB | 's) ["a "|"an "]                             "This is a", "It is", "It's"
 * NOUN: answer output result task kind category type question problem code program; VERB: is,
 * would be, will be, prints, will print, would print, outputs, will output. After a verb a
 * lower-case article is passed too ("This is a math task": math). A noun alone is kept ("Code."
 * answers the classify family). */
static const char *skip_prefix(const char *s) {
    static const char *const LEADS[] = {"the", "this", "final", "correct", "my"},
                             *const NOUNS[] = {"answer", "output", "result", "task", "kind", "category",
                                               "type", "question", "problem", "code", "program"},
                             *const VERBS[] = {"is", "would be", "will be", "prints", "will print", "would print",
                                               "outputs", "will output"};
    for (;;) {
        while (*s && (isspace((unsigned char)*s) || *s == '*' || *s == '#')) s++;
        const char *t = s;
        size_t k = 0;
        int lead_this = 0, noun = 0, verb = 0;
        for (int i = 0; !k && i < COUNT(LEADS); i++)
            if ((k = starts_word(t, LEADS[i]))) lead_this = !strcmp(LEADS[i], "this");
        t = skip_spaces(t + k);
        if ((k = starts_word(t, "python"))) t = skip_spaces(t + k);
        for (int i = 0; !noun && i < COUNT(NOUNS); i++)
            if ((k = starts_word(t, NOUNS[i]))) t = skip_spaces(t + k), noun = 1;
        if (!noun) {
            if (!lead_this && !(k = starts_word(s, "it"))) return s;
            t = lead_this ? t : skip_spaces(s + k); /* past "this" (done above) or "it" */
        }
        if (!strncmp(t, "'s ", 3)) t += 2, verb = 1;
        for (int i = 0; !verb && i < COUNT(VERBS); i++)
            if ((k = starts_word(t, VERBS[i]))) t += k, verb = 1;
        t = skip_spaces(t);
        if (noun && (*t == ':' || *t == '=')) t = skip_spaces(t + 1);
        else if (!verb) return s; /* "Code." is an answer, "This task" no introduction */
        if (verb && (!strncmp(t, "a ", 2) || !strncmp(t, "an ", 3))) t += t[1] == ' ' ? 2 : 3;
        s = t;
    }
}

static void copy_out(char *buf, size_t buf_len, const char *s, size_t n) {
    if (!buf || !buf_len) return;
    if (n >= buf_len) n = buf_len - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
}

/* After a number (at s), an arithmetic operator or '=' (past spaces, closing parentheses and a
 * short note in parentheses): the number is an operand of a computation the output shows
 * ("4 + 3 = 7", "13 (Mia) + 5 (Emma) = 18"), not its answer. */
static int is_operand(const char *s) {
    while (*s == ' ' || *s == ')') s++;
    if (*s == '(') { /* a note without digits, "13 (Mia's) + 5 (Emma's) = 18", is passed over */
        const char *close = strchr(s, ')'), *digit = strpbrk(s, "0123456789\n");
        if (!close || close - s > 40 || (digit && digit < close)) return 0;
        for (s = close + 1; *s == ' '; s++) {}
    }
    if (*s && strchr("+-*/=x", *s)) return *s != 'x' || !is_word_char(s[1]); /* 'x' alone: times */
    return !strncmp(s, "\xc3\x97", 2) || !strncmp(s, "\xc3\xb7", 2);           /* UTF-8 times and division signs */
}

/* The first integer that is not an operand: a digit run not inside a word, '-' before it when
 * that starts a token, comma groups of three digits joined, leading zeros dropped; a nonzero
 * fraction is kept ("12.5"), so it matches no integer answer. */
static int extract_number(const char *s, char *buf, size_t buf_len) {
    for (size_t i = 0; s[i]; i++) {
        if (!isdigit((unsigned char)s[i]) || (i > 0 && is_word_char(s[i - 1]))) continue;
        char out[96];
        size_t n = 0;
        if (i > 0 && s[i - 1] == '-' && (i == 1 || !is_word_char(s[i - 2]))) out[n++] = '-';
        size_t j = i;
        while (s[j] == '0' && isdigit((unsigned char)s[j + 1])) j++;
        for (;;) {
            while (isdigit((unsigned char)s[j])) {
                if (n < 64) out[n++] = s[j];
                j++;
            }
            if (s[j] == ',' && isdigit((unsigned char)s[j + 1]) && isdigit((unsigned char)s[j + 2]) &&
                isdigit((unsigned char)s[j + 3]) && !isdigit((unsigned char)s[j + 4]))
                j++;
            else break;
        }
        if (s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
            size_t k = j + 1, last = j; /* last nonzero fraction digit */
            while (isdigit((unsigned char)s[k])) {
                if (s[k] != '0') last = k;
                k++;
            }
            if (last > j) {
                out[n++] = '.';
                for (size_t q = j + 1; q <= last && n < 90; q++) out[n++] = s[q];
            }
        }
        size_t end = j;
        while (isdigit((unsigned char)s[end]) || (s[end] == '.' && isdigit((unsigned char)s[end + 1]))) end++;
        if (is_operand(s + end)) {
            i = end - 1; /* the loop's i++ moves past it */
            continue;
        }
        if (n == 2 && out[0] == '-' && out[1] == '0') n = 0, out[n++] = '0'; /* -0 is 0 */
        copy_out(buf, buf_len, out, n);
        return 1;
    }
    copy_out(buf, buf_len, "", 0);
    return 0;
}

/* The first standalone option letter: A-D with no letter or digit on either side, or a-d
 * followed by ')' ("b)", "(b)"). */
static int extract_choice(const char *s, char *buf, size_t buf_len) {
    for (size_t i = 0; s[i]; i++) {
        const char c = s[i];
        if (i > 0 && is_word_char(s[i - 1])) continue;
        if ((c >= 'A' && c <= 'D' && !is_word_char(s[i + 1])) || (c >= 'a' && c <= 'd' && s[i + 1] == ')')) {
            const char up = (char)toupper((unsigned char)c);
            copy_out(buf, buf_len, &up, 1);
            return 1;
        }
    }
    copy_out(buf, buf_len, "", 0);
    return 0;
}

static int is_wrapper(char c) { return c == '"' || c == '\'' || c == '`' || c == '*' || c == '(' || c == '['; }
static int is_trailer(char c) { return c == '"' || c == '\'' || c == '`' || c == '*' || c == ')' || c == ']' || strchr(".,;:!?", c); }

/* The first word (line = 0) or line (line = 1): past code fences (and their language tag)
 * and opening quotes, with closing quotes and trailing punctuation stripped. */
static int extract_word(const char *s, int line, char *buf, size_t buf_len) {
    for (;;) {
        while (*s && (isspace((unsigned char)*s) || is_wrapper(*s)) && strncmp(s, "```", 3)) s++;
        if (strncmp(s, "```", 3)) break;
        s += 3; /* a fence: skip its language tag up to the end of the line */
        while (*s && *s != '\n') s++;
    }
    size_t n = 0;
    while (s[n] && s[n] != '\n' && (line || !isspace((unsigned char)s[n]))) n++;
    while (n > 0 && (isspace((unsigned char)s[n - 1]) || is_trailer(s[n - 1]))) n--;
    copy_out(buf, buf_len, s, n);
    return n > 0;
}

int ttt_task_extract(ttt_answer_kind kind, const char *model_output, char *buf, size_t buf_len) {
    if (!model_output) {
        copy_out(buf, buf_len, "", 0);
        return 0;
    }
    const char *s = skip_prefix(model_output);
    switch (kind) {
    case TTT_ANSWER_NUMBER: return extract_number(s, buf, buf_len);
    case TTT_ANSWER_CHOICE: return extract_choice(s, buf, buf_len);
    case TTT_ANSWER_WORD: return extract_word(s, 0, buf, buf_len);
    }
    copy_out(buf, buf_len, "", 0);
    return 0;
}

int ttt_task_check(const ttt_task_family *f, const char *expected, const char *model_output) {
    if (!f || !expected || !model_output) return 0;
    char want[256], got[256];
    if (f->answer == TTT_ANSWER_WORD) {
        /* a multi-word answer is compared with the first line */
        const int line = strpbrk(expected, " \t") != NULL;
        if (!extract_word(expected, line, want, sizeof want) || !extract_word(skip_prefix(model_output), line, got, sizeof got))
            return 0;
        return strlen(want) == strlen(got) && !strcasecmp(want, got);
    }
    if (!ttt_task_extract(f->answer, expected, want, sizeof want) || !ttt_task_extract(f->answer, model_output, got, sizeof got))
        return 0;
    return !strcmp(want, got);
}
