/* ttt/tasks.h: generated task families with verifiable answers, for training and
 * evaluating Transformer-squared SVF experts (REINFORCE needs a reward: +1 correct,
 * -1 wrong) on small instruct models. docs/tasks.md lists the families with
 * example prompts.
 *
 * A family is a static table entry: a name, a category ("math", "code",
 * "reasoning", or "classify" for the dispatch family), a held-out flag
 * (held-out families never train an expert; they measure transfer and dispatch
 * on unseen tasks), a description and an answer kind.
 *
 * Examples are a pure function of (family, split, index): a splitmix64 stream
 * seeded from the three (never rand()). The splits are disjoint by
 * construction: a generated prompt belongs to the split its content hash names
 * (FNV-1a of the prompt: 8 of 10 buckets train, 1 val, 1 test), and generation
 * draws again until it lands in the requested split, so one prompt text can
 * never occur in two splits. The classify family wraps a training family's
 * prompt of the same split, which keeps it disjoint too.
 *
 * The checker takes the model's FIRST answer: an output holding the right
 * answer only after a wrong one is wrong.
 *   NUMBER  the first integer (sign allowed when the '-' starts a token;
 *           "1,234" is 1234; "12.0" is 12 but "12.5" is no integer, so wrong)
 *   CHOICE  the first standalone option letter A-D: "B", "B)", "(B)", "B.",
 *           "Answer: B", "The answer is B." (lower case only as "(b)" / "b)")
 *   WORD    the first word, or the first line when the expected answer has a
 *           space; quotes, backticks and '*' around it and trailing .,;:!? are
 *           stripped; compared case-insensitively
 * Before any of these, leading whitespace and a leading "The answer is",
 * "Answer:", "The output is", "Output:", "The result is" (case-insensitive)
 * are skipped. Nothing here allocates except ttt_task_generate and
 * ttt_task_classify_prompt; nothing exits. */
#ifndef TTT_TASKS_H
#define TTT_TASKS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TTT_ANSWER_NUMBER, TTT_ANSWER_CHOICE, TTT_ANSWER_WORD } ttt_answer_kind;
typedef enum { TTT_SPLIT_TRAIN, TTT_SPLIT_VAL, TTT_SPLIT_TEST } ttt_task_split;

typedef struct {
    const char *name;        /* "arith", "py-output", ... */
    const char *category;    /* "math", "code", "reasoning" or "classify" */
    int held_out;            /* 1: never used to train an expert */
    ttt_answer_kind answer;  /* how ttt_task_check reads an output */
    const char *description; /* one line */
} ttt_task_family;

/* The table, in a fixed order; NULL past the end / for an unknown name. */
int ttt_task_family_count(void);
const ttt_task_family *ttt_task_family_at(int i);
const ttt_task_family *ttt_task_family_find(const char *name);

/* "train" / "val" / "test" (NULL for a bad split); parse returns -1 for an unknown name. */
const char *ttt_task_split_name(int split);
int ttt_task_split_parse(const char *name);
const char *ttt_answer_kind_name(ttt_answer_kind kind); /* "number" / "choice" / "word" */

typedef struct {
    char *prompt; /* malloc'd; ends with the answer-format instruction */
    char *answer; /* malloc'd; the expected answer ("12", "B", "math") */
} ttt_task_example;

/* Example `index` (>= 0) of a family's split (TTT_SPLIT_*): deterministic, the same bytes
 * on every call and machine. TTT_OK, or TTT_ERR with a message naming an unknown family,
 * a bad split or a negative index (out is then zeroed). Free with ttt_task_example_free. */
int ttt_task_generate(const char *family, int split, int64_t index, ttt_task_example *out, char *err, size_t err_len);
void ttt_task_example_free(ttt_task_example *ex); /* frees the strings, zeroes ex; NULL ok */

/* 1 when model_output's first answer (rules above, by f->answer) equals expected, else 0
 * (also 0 for NULL arguments). */
int ttt_task_check(const ttt_task_family *f, const char *expected, const char *model_output);
/* The first answer as the checker reads it, written into buf (NUL-terminated, truncated
 * to buf_len); 1 if one was found, 0 if not (buf is then ""). For logs and debugging. */
int ttt_task_extract(ttt_answer_kind kind, const char *model_output, char *buf, size_t buf_len);

/* The dispatch question around any task prompt (the classify family's template), for
 * pass 1 of Transformer-squared on prompts of any family: malloc'd, NULL when out of
 * memory or prompt is NULL. The expected answer is the task's category. */
char *ttt_task_classify_prompt(const char *prompt);

#ifdef __cplusplus
}
#endif
#endif
