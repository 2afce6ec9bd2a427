/* ttt serve: an HTTP server for a `ttt lm train` checkpoint, OpenAI-style
 * completions (streamed as Server-Sent Events on request) and sessions: a
 * session reads a document once (TTT-E2E models adapt to it, the others fill
 * their KV cache) and answers many questions from a copy of that state. E2E
 * sessions can be saved to and loaded from state files. docs/serve.md has the
 * endpoints and examples.
 *
 * Threads. libmicrohttpd runs one thread per connection; those threads parse
 * and validate requests (JSON with json-c) and answer the cheap ones (health,
 * listings) themselves. Everything that touches the model goes to one worker
 * thread through a FIFO queue guarded by a mutex: the ttt context, the
 * tokenizer (its encoder has a cache) and every session's reader belong to
 * that thread alone. So generation is serialized, requests wait their turn
 * instead of being lost, OpenMP's thread count (a per-thread setting) and the
 * GPU context stay with one thread, and memory stays flat: each job frees its
 * reader and resets the context's step arena after every token. */
#include "cli.h"

#ifndef TTT_HAVE_MHD

int cmd_serve(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "ttt serve: this ttt was built without libmicrohttpd (or json-c), so it cannot serve; install "
                    "libmicrohttpd-dev and libjson-c-dev (scripts/install-deps.sh) and rebuild\n");
    return 1;
}

#else

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sample.h"
#include "ttt/runtime.h"
#include "ttt/tokenizer.h"
#include "ttt/ttt.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { MAX_CONNECTIONS = 64 };        /* one thread each; more wait in the kernel's listen queue */
enum { CONNECTION_TIMEOUT_S = 300 };  /* idle connections close after this */
enum { SHUTDOWN_WAIT_S = 60 };        /* on SIGTERM, requests in flight get this long to finish */
enum { NAME_MAX_LEN = 128 };          /* state file names */
#define DEFAULT_CONTEXT_FULL ((int64_t)4096)     /* full attention: the KV cache grows with it */
#define DEFAULT_CONTEXT_RING ((int64_t)1 << 20)  /* windowed and TTT-E2E: constant memory */

/* ---- flags ------------------------------------------------------------------------------------- */

typedef struct {
    const char *ckpt, *tokenizer, *host, *device, *state_dir;
    int64_t port, threads, max_tokens, max_body, max_sessions, max_context;
    double eta;
    int quiet;
} serve_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt serve --ckpt DIR|FILE --tokenizer PATH [flags]\n"
            "An HTTP server for a language model checkpoint: OpenAI-style completions (POST /v1/completions,\n"
            "streamed with \"stream\": true) and sessions that read a document once and answer from the\n"
            "state it left (POST /v1/sessions; TTT-E2E models learn from it). docs/serve.md lists the endpoints.\n"
            "Requests are answered one at a time in arrival order (one model, one context); the rest wait.\n"
            "  --ckpt DIR|FILE     a checkpoint of ttt lm train (DIR means DIR/model.safetensors)\n"
            "  --tokenizer PATH    a folder with vocab.json + merges.txt, or a tokenizer.json: the one the\n"
            "                      model's training shard was prepared with\n"
            "  --host ADDR         the IPv4 or IPv6 address to listen on (default 127.0.0.1: this machine\n"
            "                      only; the server has no authentication)\n"
            "  --port N            TCP port (default 8080; 0: any free port, printed at start)\n"
            "  --device D          auto | cpu | cuda (default auto: cuda when built with it and a GPU is there)\n"
            "  --threads N         CPU threads for the model (default 0: OpenMP's choice)\n"
            "  --max-tokens N      the most tokens one completion may ask for (default 256)\n"
            "  --max-context N     the most positions one reader holds: a session's document plus a\n"
            "                      completion's prompt and tokens (default 4096 for full attention, whose\n"
            "                      sessions keep a KV cache of this size; 1048576 for sliding-window and\n"
            "                      TTT-E2E models, whose memory is constant)\n"
            "  --max-body BYTES    the largest request body (default 1048576); larger ones get 413\n"
            "  --max-sessions N    sessions open at once (default 16); more get 429\n"
            "  --state-dir DIR     where POST /v1/sessions/{id}/save writes NAME.state and\n"
            "                      POST /v1/sessions/load reads it (TTT-E2E models; created if missing;\n"
            "                      without it saving and loading are refused)\n"
            "  --eta X             TTT-E2E: the inner learning rate while reading (default 1, as in ttt lm\n"
            "                      generate: the end of training's ramp)\n"
            "  --quiet             no line per request on stderr\n"
            "SIGINT / SIGTERM: stop accepting, finish the requests in flight, free everything, exit 0.\n"
            "exit codes: 0 ok, 1 runtime failure (checkpoint, tokenizer, device, address in use), 2 bad usage\n");
}

static int parse(int argc, char **argv, serve_opts *o) {
    *o = (serve_opts){.host = "127.0.0.1", .device = "auto", .port = 8080, .max_tokens = 256, .max_body = 1 << 20,
                      .max_sessions = 16, .eta = 1.0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        int r;
        if ((r = cli_flag_str(argc, argv, &i, "--ckpt", &o->ckpt)) ||
            (r = cli_flag_str(argc, argv, &i, "--tokenizer", &o->tokenizer)) ||
            (r = cli_flag_str(argc, argv, &i, "--host", &o->host)) ||
            (r = cli_flag_str(argc, argv, &i, "--device", &o->device)) ||
            (r = cli_flag_str(argc, argv, &i, "--state-dir", &o->state_dir)) ||
            (r = cli_flag_int(argc, argv, &i, "--port", 0, 65535, &o->port)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 4096, &o->threads)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-tokens", 1, 1 << 20, &o->max_tokens)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-context", 1, (int64_t)1 << 40, &o->max_context)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-body", 64, (int64_t)1 << 30, &o->max_body)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-sessions", 0, 100000, &o->max_sessions)) ||
            (r = cli_flag_double(argc, argv, &i, "--eta", 0, 1e3, &o->eta)) ||
            (r = cli_flag_bool(argv, i, "--quiet", &o->quiet))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_unknown("serve", argv[i]);
    }
    const char *bad = NULL;
    char buf[300];
    if (!o->ckpt || !o->tokenizer) bad = "needs --ckpt and --tokenizer (see --help)";
    else if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))
        snprintf(buf, sizeof buf, "--device %.100s: expected auto, cpu or cuda", o->device), bad = buf;
    else if (o->state_dir && strlen(o->state_dir) > 3800)
        bad = "--state-dir: the path is too long";
    if (bad) {
        fprintf(stderr, "ttt serve: %s\n", bad);
        return EXIT_USAGE;
    }
    return -1;
}

/* ---- small helpers ----------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static int buf_add(buf_t *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* Appends s[0..n) to b as valid UTF-8, each byte that starts no valid character
 * (or an overlong form, a surrogate, a code point past U+10FFFF) replaced by
 * U+FFFD, so the JSON we write is always valid. A character cut at the end
 * waits for the next call unless final: a token can hold half of one. Returns
 * the bytes consumed. */
static size_t utf8_clean(const unsigned char *s, size_t n, int final, buf_t *b) {
    static const char REPL[] = "\xEF\xBF\xBD";
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            buf_add(b, s + i, 1), i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
        else {
            buf_add(b, REPL, 3), i++;
            continue;
        }
        size_t k = 1;
        while (k < len && i + k < n && (s[i + k] & 0xC0) == 0x80) cp = (cp << 6) | (s[i + k++] & 0x3F);
        if (k < len) {
            if (i + k == n && !final) return i; /* unfinished: wait for the next token */
            buf_add(b, REPL, 3), i += k;
            continue;
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) buf_add(b, REPL, 3);
        else buf_add(b, s + i, len);
        i += len;
    }
    return n;
}

/* State file names: letters, digits, '-', '_', '.', not starting with '.', so a
 * request can never name a path outside --state-dir (no '/', no ".."). */
static int valid_name(const char *s, size_t n) {
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* mkdir -p for --state-dir (0 / -1 with errno). */
static int make_dirs(const char *path) {
    char b[4096];
    if (snprintf(b, sizeof b, "%s", path) >= (int)sizeof b) return errno = ENAMETOOLONG, -1;
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(b, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(b, 0777) && errno != EEXIST ? -1 : 0;
}

/* ---- the server's state ------------------------------------------------------------------------ */

typedef struct session {
    char id[40];
    ttt_lm_reader r;  /* worker thread only */
    double *last;     /* logits after the document; NULL for a state loaded from a file (it keeps none) */
    int64_t tokens;   /* positions read */
    int64_t created;
    char origin[NAME_MAX_LEN + 16]; /* "document" or "state NAME" */
} session;

typedef enum { J_COMPLETE, J_SESSION_NEW, J_SESSION_DELETE, J_SESSION_SAVE, J_SESSION_LOAD } job_kind;
typedef enum { PHASE_QUEUED, PHASE_STREAMING, PHASE_DONE } job_phase;

typedef struct job {
    struct job *next;
    job_kind kind;
    int refs; /* the HTTP thread, the worker, and a streamed response: freed at 0 (under S.mu) */
    pthread_cond_t cv;
    /* request */
    char *text; /* prompt or document (may hold NULs) */
    size_t text_len;
    char sid[64], name[NAME_MAX_LEN + 1];
    int64_t max_tokens, top_k;
    double temperature, top_p;
    uint64_t seed;
    int stream;
    /* answer */
    job_phase phase;
    unsigned status;
    char *body; /* JSON (status != 200 on a stream: the error) */
    int64_t tokens_out;
    /* a stream: SSE bytes made by the worker, sent by the connection thread */
    buf_t out;
    size_t sent;
    int streaming; /* the stream has started (it may be done before the HTTP thread looks) */
    int cancelled; /* the client went away: stop generating */
} job;

static struct {
    serve_opts o;
    /* set once by the worker before the daemon starts; read-only after */
    char model_id[17], tok_id[17], model_name[160], kind[24];
    int64_t max_context, params, vocab, step;
    ttt_device device;
    int e2e;
    uint64_t id_key; /* session and completion ids */
    /* the worker's own */
    ttt_ctx *ctx;
    ttt_lm m;
    ttt_tokenizer *tok;
    int64_t V_text; /* ids the tokenizer can decode: only these are sampled */
    double *row;
    sample_cand *cands;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the worker: a job or an order; main: the worker's start */
    job *head, *tail;
    int queued, stopping, worker_exit, started, start_rc;
    int active; /* requests in flight */
    uint64_t counter, served;
    session **sessions;
    int n_sessions;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static uint64_t next_id(void) { /* under S.mu */
    uint64_t x = S.id_key + ++S.counter;
    return sample_rng_next(&x);
}

/* ---- JSON answers -------------------------------------------------------------------------------- */

static char *json_take(json_object *o) { /* serializes and frees o; NULL if out of memory */
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
    char *r = s ? malloc(strlen(s) + 2) : NULL;
    if (r) sprintf(r, "%s\n", s);
    json_object_put(o);
    return r;
}

/* {"error": {"message": msg, "type": type}} */
static json_object *error_obj(const char *type, const char *msg) {
    buf_t clean = {0};
    utf8_clean((const unsigned char *)msg, strlen(msg), 1, &clean); /* messages may quote request text */
    json_object *e = json_object_new_object(), *o = json_object_new_object();
    json_object_object_add(e, "message", json_object_new_string(clean.p ? clean.p : ""));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(o, "error", e);
    free(clean.p);
    return o;
}

static char *error_json(const char *type, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_take(error_obj(type, msg));
}

static const char *error_type(unsigned status) {
    switch (status) {
    case 404: return "not_found_error";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 429: return "too_many_sessions";
    case 503: return "unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* ---- the worker: jobs ------------------------------------------------------------------------------ */

static void job_unref(job *j) { /* under S.mu */
    if (--j->refs > 0) return;
    pthread_cond_destroy(&j->cv);
    free(j->text), free(j->body), free(j->out.p);
    free(j);
}

static void job_finish(job *j, unsigned status, char *body) {
    pthread_mutex_lock(&S.mu);
    j->status = status;
    free(j->body);
    j->body = body;
    j->phase = PHASE_DONE;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&S.mu);
}

#define FAIL(j, status, ...) job_finish(j, status, error_json(error_type(status), __VA_ARGS__))

/* Appends SSE bytes for the client; 0, or 1 once the client has gone. */
static int job_push(job *j, const char *s, size_t n) {
    pthread_mutex_lock(&S.mu);
    const int gone = j->cancelled;
    if (!gone && buf_add(&j->out, s, n) == 0) pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&S.mu);
    return gone;
}

static int job_push_json(job *j, json_object *o) {
    char *s = json_take(o);
    if (!s) return 1;
    s[strlen(s) - 1] = 0; /* json_take's newline */
    buf_t b = {0};
    int gone = buf_add(&b, "data: ", 6) || buf_add(&b, s, strlen(s)) || buf_add(&b, "\n\n", 2) ? 1 : job_push(j, b.p, b.n);
    free(s), free(b.p);
    return gone;
}

static session *find_session(const char *id) { /* under S.mu or on the worker */
    for (int i = 0; i < S.n_sessions; i++)
        if (!strcmp(S.sessions[i]->id, id)) return S.sessions[i];
    return NULL;
}

static void session_free(session *s) { /* worker */
    if (!s) return;
    ttt_lm_reader_free(S.ctx, &s->r);
    free(s->last);
    free(s);
}

/* A reader at position 0 (TTT-E2E ones with --eta). */
static int reader_init(ttt_lm_reader *r, int64_t max_len) {
    if (ttt_lm_reader_init(S.ctx, &S.m, r, 1, max_len) != TTT_OK) return TTT_ERR;
    if (r->e2e) r->state.eta = S.o.eta;
    return TTT_OK;
}

/* Reads n ids into r and leaves the last position's logits in S.row. */
static int read_ids(ttt_lm_reader *r, const int32_t *ids, int64_t n) {
    ttt_tensor *lg = ttt_lm_reader_read(S.ctx, &S.m, r, ttt_from_host(S.ctx, TTT_I32, TTT_DIMS(1, n), ids), 0);
    const int rc = lg ? ttt_copy_to_host(S.ctx, lg, S.row, TTT_F64) : TTT_ERR;
    ttt_step_reset(S.ctx); /* this token's temporaries: nothing outlives the call */
    return rc;
}

static json_object *completion_head(const char *id, int64_t created) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(id));
    json_object_object_add(o, "object", json_object_new_string("text_completion"));
    json_object_object_add(o, "created", json_object_new_int64(created));
    json_object_object_add(o, "model", json_object_new_string(S.model_name));
    return o;
}

static json_object *choices(const char *text, size_t len, const char *finish) {
    json_object *c = json_object_new_object(), *a = json_object_new_array();
    json_object_object_add(c, "text", json_object_new_string_len(text ? text : "", (int)len));
    json_object_object_add(c, "index", json_object_new_int(0));
    json_object_object_add(c, "finish_reason", finish ? json_object_new_string(finish) : NULL);
    json_object_array_add(a, c);
    return a;
}

static json_object *usage_json(int64_t prompt, int64_t completion) {
    json_object *u = json_object_new_object();
    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(u, "completion_tokens", json_object_new_int64(completion));
    json_object_object_add(u, "total_tokens", json_object_new_int64(prompt + completion));
    return u;
}

static void run_complete(job *j) {
    char err[512], cid[48];
    ttt_token_ids ids = {0};
    ttt_lm_reader r = {0};
    buf_t raw = {0}, text = {0};
    size_t cleaned = 0; /* bytes of raw already turned into text */
    session *s = NULL;
    pthread_mutex_lock(&S.mu);
    snprintf(cid, sizeof cid, "cmpl-%016llx", (unsigned long long)next_id());
    pthread_mutex_unlock(&S.mu);
    const int64_t created = (int64_t)time(NULL);
    if (j->sid[0] && !(s = find_session(j->sid))) {
        FAIL(j, 404, "no session '%s' (GET /v1/sessions lists them)", j->sid);
        return;
    }
    if (ttt_tokenizer_encode(S.tok, j->text, j->text_len, &ids, err, sizeof err) != TTT_OK) {
        FAIL(j, 500, "tokenizer: %s", err);
        goto done;
    }
    const int64_t n_p = (int64_t)ids.n, pos0 = s ? s->tokens : 0, total = pos0 + n_p + j->max_tokens;
    if (!s && n_p == 0) {
        FAIL(j, 400, "prompt is empty: it must encode to at least one token");
        goto done;
    }
    if (s && n_p == 0 && !s->last) {
        FAIL(j, 400, "session %s was loaded from a state file, which keeps no logits: give a prompt of at least one token",
             s->id);
        goto done;
    }
    if (total > S.max_context) {
        if (s)
            FAIL(j, 400, "too many tokens: the session's %lld + the prompt's %lld + max_tokens %lld = %lld positions, over "
                 "the context limit of %lld (--max-context)", (long long)pos0, (long long)n_p, (long long)j->max_tokens,
                 (long long)total, (long long)S.max_context);
        else
            FAIL(j, 400, "too many tokens: the prompt's %lld + max_tokens %lld = %lld positions, over the context limit "
                 "of %lld (--max-context)", (long long)n_p, (long long)j->max_tokens, (long long)total,
                 (long long)S.max_context);
        goto done;
    }
    if (reader_init(&r, s ? S.max_context : n_p + j->max_tokens) != TTT_OK ||
        (s && ttt_lm_reader_copy(S.ctx, &S.m, &r, &s->r) != TTT_OK)) {
        FAIL(j, 500, "reader: %s", ttt_error(S.ctx));
        goto done;
    }
    if (ttt_lm_reader_room(&S.m, &r) < n_p + j->max_tokens) { /* --max-context already bounds it: belt and braces */
        FAIL(j, 400, "too many tokens: the reader has room for %lld more positions, the request needs %lld",
             (long long)ttt_lm_reader_room(&S.m, &r), (long long)(n_p + j->max_tokens));
        goto done;
    }
    if (j->max_tokens > 0) {
        if (n_p > 0 ? read_ids(&r, ids.ids, n_p) != TTT_OK : (memcpy(S.row, s->last, sizeof(double) * (size_t)S.vocab), 0)) {
            FAIL(j, 500, "reading the prompt: %s", ttt_error(S.ctx));
            goto done;
        }
    }
    if (j->stream) { /* the request is good: the HTTP thread starts the response */
        pthread_mutex_lock(&S.mu);
        j->phase = PHASE_STREAMING, j->status = 200, j->streaming = 1;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&S.mu);
    }
    const sample_params sp = {j->temperature, j->top_k, j->top_p};
    uint64_t rng = j->seed;
    const char *finish = "length";
    int64_t made = 0;
    int gone = 0;
    while (made < j->max_tokens && !gone) {
        int32_t next = sample_token(S.row, S.V_text, &sp, &rng, S.cands);
        made++;
        if (ttt_tokenizer_is_special(S.tok, next)) { /* <|endoftext|>: the model ends the text */
            finish = "stop";
            break;
        }
        char *piece = NULL;
        size_t len = 0;
        if (ttt_tokenizer_decode(S.tok, &next, 1, 0, &piece, &len, err, sizeof err) != TTT_OK ||
            buf_add(&raw, piece, len)) {
            free(piece);
            snprintf(err, sizeof err, "decoding token %d failed", (int)next);
            goto fail_mid;
        }
        free(piece);
        if (j->stream) {
            buf_t t = {0};
            cleaned += utf8_clean((const unsigned char *)raw.p + cleaned, raw.n - cleaned, 0, &t);
            if (t.n) {
                json_object *o = completion_head(cid, created);
                json_object_object_add(o, "choices", choices(t.p, t.n, NULL));
                gone = job_push_json(j, o);
            }
            free(t.p);
        } else {
            pthread_mutex_lock(&S.mu);
            gone = j->cancelled;
            pthread_mutex_unlock(&S.mu);
        }
        if (made == j->max_tokens || gone) break; /* the last token needs no logits */
        if (read_ids(&r, &next, 1) != TTT_OK) {
            snprintf(err, sizeof err, "token %lld: %s", (long long)made, ttt_error(S.ctx));
            goto fail_mid;
        }
    }
    j->tokens_out = made;
    utf8_clean((const unsigned char *)raw.p + cleaned, raw.n - cleaned, 1, &text);
    if (j->stream) {
        json_object *o = completion_head(cid, created);
        json_object_object_add(o, "choices", choices(text.p, text.n, finish));
        json_object_object_add(o, "usage", usage_json(n_p, made));
        if (!job_push_json(j, o)) job_push(j, "data: [DONE]\n\n", 14);
        job_finish(j, 200, NULL);
    } else {
        json_object *o = completion_head(cid, created);
        json_object_object_add(o, "choices", choices(text.p, text.n, finish));
        json_object_object_add(o, "usage", usage_json(n_p, made));
        char *body = json_take(o);
        if (body) job_finish(j, 200, body);
        else FAIL(j, 500, "out of memory");
    }
    goto done;
fail_mid:
    if (j->stream) { /* headers are out: the error goes into the stream */
        job_push_json(j, error_obj("server_error", err));
        job_finish(j, 200, NULL);
    } else {
        FAIL(j, 500, "%s", err);
    }
done:
    ttt_lm_reader_free(S.ctx, &r);
    ttt_step_reset(S.ctx);
    ttt_clear_error(S.ctx);
    ttt_token_ids_free(&ids);
    free(raw.p), free(text.p);
}

static json_object *session_json(const session *s) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "session", json_object_new_string(s->id));
    json_object_object_add(o, "object", json_object_new_string("session"));
    json_object_object_add(o, "tokens", json_object_new_int64(s->tokens));
    json_object_object_add(o, "created", json_object_new_int64(s->created));
    json_object_object_add(o, "origin", json_object_new_string(s->origin));
    if (s->r.e2e) json_object_object_add(o, "inner_steps", json_object_new_int64(s->r.state.steps));
    return o;
}

/* Adds s to the list (or frees it and answers 429 if it filled up meanwhile). */
static void session_publish(job *j, session *s, const char *extra_key, const char *extra) {
    pthread_mutex_lock(&S.mu);
    const int full = S.n_sessions >= S.o.max_sessions;
    session **a = full ? NULL : realloc(S.sessions, sizeof *a * (size_t)(S.n_sessions + 1));
    if (a) S.sessions = a, a[S.n_sessions++] = s, snprintf(s->id, sizeof s->id, "sess-%016llx", (unsigned long long)next_id());
    pthread_mutex_unlock(&S.mu);
    if (!a) {
        session_free(s);
        if (full) FAIL(j, 429, "%lld sessions are open (--max-sessions %lld): delete one first", (long long)S.o.max_sessions,
                       (long long)S.o.max_sessions);
        else FAIL(j, 500, "out of memory");
        return;
    }
    json_object *o = session_json(s);
    if (extra_key) json_object_object_add(o, extra_key, json_object_new_string(extra));
    job_finish(j, 200, json_take(o));
}

static session *session_new(job *j) {
    session *s = calloc(1, sizeof *s);
    if (!s || reader_init(&s->r, S.max_context) != TTT_OK) {
        FAIL(j, 500, "session: %s", s ? ttt_error(S.ctx) : "out of memory");
        if (s) session_free(s);
        return NULL;
    }
    s->created = (int64_t)time(NULL);
    return s;
}

static int sessions_full(job *j) {
    pthread_mutex_lock(&S.mu);
    const int full = S.n_sessions >= S.o.max_sessions;
    pthread_mutex_unlock(&S.mu);
    if (full)
        FAIL(j, 429, "%lld sessions are open (--max-sessions %lld): delete one first", (long long)S.n_sessions,
             (long long)S.o.max_sessions);
    return full;
}

static void run_session_new(job *j) {
    char err[512];
    ttt_token_ids ids = {0};
    session *s = NULL;
    if (sessions_full(j)) return;
    if (ttt_tokenizer_encode(S.tok, j->text, j->text_len, &ids, err, sizeof err) != TTT_OK) {
        FAIL(j, 500, "tokenizer: %s", err);
        goto done;
    }
    const int64_t n = (int64_t)ids.n;
    if (n == 0) {
        FAIL(j, 400, "document is empty: it must encode to at least one token");
        goto done;
    }
    if (n >= S.max_context) { /* leave room for at least one generated token */
        FAIL(j, 400, "too many tokens: the document has %lld, the context limit is %lld positions (--max-context)",
             (long long)n, (long long)S.max_context);
        goto done;
    }
    if (!(s = session_new(j))) goto done;
    if (!(s->last = malloc(sizeof(double) * (size_t)S.vocab))) {
        FAIL(j, 500, "out of memory");
        goto done;
    }
    if (read_ids(&s->r, ids.ids, n) != TTT_OK) {
        FAIL(j, 500, "reading the document: %s", ttt_error(S.ctx));
        goto done;
    }
    memcpy(s->last, S.row, sizeof(double) * (size_t)S.vocab);
    s->tokens = ttt_lm_reader_pos(&s->r);
    snprintf(s->origin, sizeof s->origin, "document");
    session_publish(j, s, NULL, NULL);
    s = NULL;
done:
    session_free(s);
    ttt_step_reset(S.ctx);
    ttt_clear_error(S.ctx);
    ttt_token_ids_free(&ids);
}

static void run_session_delete(job *j) {
    pthread_mutex_lock(&S.mu);
    session *s = NULL;
    for (int i = 0; i < S.n_sessions && !s; i++)
        if (!strcmp(S.sessions[i]->id, j->sid)) {
            s = S.sessions[i];
            memmove(S.sessions + i, S.sessions + i + 1, sizeof *S.sessions * (size_t)(S.n_sessions - i - 1));
            S.n_sessions--;
        }
    pthread_mutex_unlock(&S.mu);
    if (!s) {
        FAIL(j, 404, "no session '%s' (GET /v1/sessions lists them)", j->sid);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "session", json_object_new_string(s->id));
    json_object_object_add(o, "deleted", json_object_new_boolean(1));
    session_free(s);
    job_finish(j, 200, json_take(o));
}

static int state_path(job *j, char *path, size_t n) {
    if (!S.o.state_dir) {
        FAIL(j, 400, "this server keeps no state files: start it with --state-dir DIR");
        return -1;
    }
    if (!S.e2e) {
        FAIL(j, 400, "state files hold what a TTT-E2E model learned from a document; this model (%s) keeps a plain KV "
             "cache, so its sessions live in memory only", S.kind);
        return -1;
    }
    snprintf(path, n, "%s/%s.state", S.o.state_dir, j->name);
    return 0;
}

static void run_session_save(job *j) {
    char path[4096];
    session *s = find_session(j->sid);
    if (!s) {
        FAIL(j, 404, "no session '%s' (GET /v1/sessions lists them)", j->sid);
        return;
    }
    if (state_path(j, path, sizeof path)) return;
    if (ttt_lm_reader_save(S.ctx, &S.m, &s->r, path, S.model_id, S.tok_id) != TTT_OK) {
        FAIL(j, 500, "saving %s.state: %s", j->name, ttt_error(S.ctx));
    } else {
        struct stat st;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "session", json_object_new_string(s->id));
        json_object_object_add(o, "name", json_object_new_string(j->name));
        json_object_object_add(o, "tokens", json_object_new_int64(s->tokens));
        json_object_object_add(o, "bytes", json_object_new_int64(stat(path, &st) == 0 ? (int64_t)st.st_size : -1));
        job_finish(j, 200, json_take(o));
    }
    ttt_step_reset(S.ctx);
    ttt_clear_error(S.ctx);
}

static void run_session_load(job *j) {
    char path[4096];
    if (state_path(j, path, sizeof path) || sessions_full(j)) return;
    if (access(path, R_OK) != 0) {
        FAIL(j, 404, "no state file '%s.state' in --state-dir (%s)", j->name, strerror(errno));
        return;
    }
    session *s = session_new(j);
    if (!s) return;
    if (ttt_lm_reader_load(S.ctx, &S.m, &s->r, path, S.model_id, S.tok_id) != TTT_OK) {
        FAIL(j, 400, "state file '%s.state' refused: %s", j->name, ttt_error(S.ctx));
        session_free(s);
    } else {
        s->tokens = ttt_lm_reader_pos(&s->r);
        snprintf(s->origin, sizeof s->origin, "state %s", j->name);
        session_publish(j, s, "name", j->name);
    }
    ttt_step_reset(S.ctx);
    ttt_clear_error(S.ctx);
}

/* Loads everything (on this thread: see the top); 0 or an exit code. */
static int worker_start(void) {
    const serve_opts *o = &S.o;
    ttt_device dev = TTT_CPU;
    if (!strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && ttt_device_count(TTT_CUDA) > 0)) dev = TTT_CUDA;
    ttt_ctx_config cc = {.device = dev, .seed = 1, .threads = (int)o->threads};
    if (!(S.ctx = ttt_ctx_new(&cc))) {
        fprintf(stderr, "ttt serve: could not create a %s context: %s\n", dev == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
        return EXIT_RUNTIME;
    }
    S.device = dev;
    char err[600];
    if (ttt_lm_load(S.ctx, o->ckpt, -1, &S.m, &S.step, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt serve: --ckpt %s: %s\n", o->ckpt, err);
        return EXIT_RUNTIME;
    }
    int rc = cli_load_tokenizer("serve", o->tokenizer, &S.tok);
    if (rc) return rc;
    S.vocab = S.m.cfg.vocab;
    S.V_text = ttt_tokenizer_vocab_size(S.tok);
    if (S.V_text > S.vocab) {
        fprintf(stderr, "ttt serve: the tokenizer has %lld tokens but the model %lld: not the tokenizer of its data\n",
                (long long)S.V_text, (long long)S.vocab);
        return EXIT_USAGE;
    }
    /* the tokenizer's id in state files: its files' bytes */
    if (ttt_tokenizer_files_id(o->tokenizer, S.tok_id, sizeof S.tok_id, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt serve: --tokenizer %s: cannot read it again to identify it: %s\n", o->tokenizer, err);
        return EXIT_RUNTIME;
    }
    if (ttt_lm_fingerprint(S.ctx, &S.m, S.model_id, sizeof S.model_id) != TTT_OK) {
        fprintf(stderr, "ttt serve: %s\n", ttt_error(S.ctx));
        return EXIT_RUNTIME;
    }
    S.e2e = ttt_lm_is_e2e(&S.m);
    snprintf(S.kind, sizeof S.kind, "%s", S.e2e ? "ttt-e2e" : S.m.cfg.window > 0 ? "sliding-window" : "full-attention");
    S.params = ttt_lm_param_count(&S.m.cfg);
    S.max_context = o->max_context ? o->max_context : S.e2e || S.m.cfg.window > 0 ? DEFAULT_CONTEXT_RING : DEFAULT_CONTEXT_FULL;
    /* the model's name in answers: the run directory's or file's name */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", o->ckpt);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    const char *base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
    snprintf(S.model_name, sizeof S.model_name, "%.150s", base);
    char *dot = strstr(S.model_name, ".safetensors");
    if (dot && dot != S.model_name && !dot[12]) *dot = 0;
    S.row = malloc(sizeof(double) * (size_t)S.vocab);
    S.cands = malloc(sizeof(sample_cand) * (size_t)S.vocab);
    if (!S.row || !S.cands) {
        fprintf(stderr, "ttt serve: out of host memory\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

static void worker_stop(void) {
    for (int i = 0; i < S.n_sessions; i++) session_free(S.sessions[i]);
    free(S.sessions);
    S.sessions = NULL, S.n_sessions = 0;
    free(S.row), free(S.cands);
    if (S.ctx) ttt_lm_free(S.ctx, &S.m);
    ttt_ctx_free(S.ctx);
    ttt_tokenizer_free(S.tok);
    S.ctx = NULL, S.tok = NULL;
}

static void *worker(void *arg) {
    (void)arg;
    const int rc = worker_start();
    pthread_mutex_lock(&S.mu);
    S.started = 1, S.start_rc = rc;
    pthread_cond_broadcast(&S.cv);
    while (!rc) {
        while (!S.head && !S.worker_exit) pthread_cond_wait(&S.cv, &S.mu);
        job *j = S.head;
        if (!j) break; /* told to exit, and the queue is empty */
        S.head = j->next;
        if (!S.head) S.tail = NULL;
        S.queued--;
        pthread_mutex_unlock(&S.mu);
        ttt_clear_error(S.ctx);
        switch (j->kind) {
        case J_COMPLETE: run_complete(j); break;
        case J_SESSION_NEW: run_session_new(j); break;
        case J_SESSION_DELETE: run_session_delete(j); break;
        case J_SESSION_SAVE: run_session_save(j); break;
        case J_SESSION_LOAD: run_session_load(j); break;
        }
        pthread_mutex_lock(&S.mu);
        if (j->phase != PHASE_DONE) { /* every path finishes; never leave a client waiting */
            j->phase = PHASE_DONE, j->status = 500;
            pthread_cond_broadcast(&j->cv);
        }
        job_unref(j);
    }
    pthread_mutex_unlock(&S.mu);
    worker_stop();
    return NULL;
}

/* ---- HTTP ------------------------------------------------------------------------------------------- */

typedef struct {
    buf_t body;
    uint64_t dropped; /* body bytes read past --max-body and thrown away */
    int too_big;
    double t0;
    char what[120]; /* "METHOD URL", for the log */
} request;

/* A body over the limit is read and thrown away up to this much, so the client
 * sees the 413 instead of a reset connection; past it the connection closes. */
static uint64_t drop_cap(void) { return (uint64_t)S.o.max_body * 4 + (1u << 20); }

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, const char *allow) {
    if (!body) body = strdup("{\"error\": {\"message\": \"out of memory\", \"type\": \"server_error\"}}\n");
    if (!body) return MHD_NO;
    struct MHD_Response *rsp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!rsp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(rsp, "Content-Type", "application/json");
    if (allow) MHD_add_response_header(rsp, "Allow", allow);
    const enum MHD_Result r = MHD_queue_response(c, status, rsp);
    MHD_destroy_response(rsp);
    return r;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply(c, status, error_json(error_type(status), "%s", msg), NULL);
}

/* ---- request fields: strict types, clear messages ----- */

/* Field lookups: 0 absent (or null), 1 present and valid, -1 bad (message in msg). */
static int field_int(json_object *o, const char *key, int64_t lo, int64_t hi, int64_t *out, char *msg, size_t n) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v) return 0;
    if (!json_object_is_type(v, json_type_int)) return snprintf(msg, n, "%s must be an integer", key), -1;
    errno = 0;
    const int64_t x = json_object_get_int64(v);
    if (errno || x < lo || x > hi)
        return snprintf(msg, n, "%s %s is out of range: expected an integer in [%lld, %lld]", key,
                        json_object_to_json_string(v), (long long)lo, (long long)hi), -1;
    *out = x;
    return 1;
}

static int field_num(json_object *o, const char *key, double lo, double hi, int lo_open, double *out, char *msg, size_t n) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v) return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return snprintf(msg, n, "%s must be a number", key), -1;
    const double x = json_object_get_double(v);
    if (!isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
        return snprintf(msg, n, "%s %s is out of range: expected a number in %c%g, %g]", key,
                        json_object_to_json_string(v), lo_open ? '(' : '[', lo, hi), -1;
    *out = x;
    return 1;
}

static int field_bool(json_object *o, const char *key, int *out, char *msg, size_t n) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v) return 0;
    if (!json_object_is_type(v, json_type_boolean)) return snprintf(msg, n, "%s must be true or false", key), -1;
    *out = json_object_get_boolean(v);
    return 1;
}

static int field_str(json_object *o, const char *key, const char **out, size_t *len, char *msg, size_t n) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v) return 0;
    if (!json_object_is_type(v, json_type_string)) return snprintf(msg, n, "%s must be a string", key), -1;
    *out = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    return 1;
}

/* Every key of o must be in the comma-separated list `known`. */
static int known_fields(json_object *o, const char *known, char *msg, size_t n) {
    json_object_object_foreach(o, key, val) {
        (void)val;
        const size_t kl = strlen(key);
        int ok = 0;
        for (const char *p = known; *p && !ok;) {
            const char *e = strchr(p, ',');
            const size_t l = e ? (size_t)(e - p) : strlen(p);
            ok = l == kl && !strncmp(p, key, l);
            p = e ? e + 1 : p + l;
        }
        if (!ok) return snprintf(msg, n, "unknown field '%.100s' (this endpoint takes: %s)", key, known), -1;
    }
    return 0;
}

/* The body as a JSON object, or NULL with a message. */
static json_object *parse_body(const request *r, char *msg, size_t n) {
    if (r->body.n == 0) return snprintf(msg, n, "the body is empty: expected a JSON object"), NULL;
    json_tokener *tk = json_tokener_new();
    if (!tk) return snprintf(msg, n, "out of memory"), NULL;
    json_object *o = json_tokener_parse_ex(tk, r->body.p, (int)r->body.n);
    enum json_tokener_error e = json_tokener_get_error(tk);
    size_t end = json_tokener_get_parse_end(tk);
    if (!o && e == json_tokener_continue) snprintf(msg, n, "malformed JSON: the body ends inside a value");
    else if (!o) snprintf(msg, n, "malformed JSON at byte %zu: %s", end, json_tokener_error_desc(e));
    else {
        while (end < r->body.n && strchr(" \t\r\n", r->body.p[end])) end++;
        if (end < r->body.n) snprintf(msg, n, "malformed JSON: unexpected text after the value at byte %zu", end);
        else if (!json_object_is_type(o, json_type_object)) snprintf(msg, n, "the body must be a JSON object");
        else msg = NULL;
        if (msg) json_object_put(o), o = NULL;
    }
    json_tokener_free(tk);
    return o;
}

static job *job_new(job_kind kind) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->kind = kind;
    j->refs = 2; /* the HTTP thread's and the worker's */
    pthread_cond_init(&j->cv, NULL);
    return j;
}

/* ----- streamed responses: the connection's thread waits for the worker's bytes */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    job *j = cls;
    pthread_mutex_lock(&S.mu);
    while (j->sent == j->out.n && j->phase != PHASE_DONE) pthread_cond_wait(&j->cv, &S.mu);
    size_t n = j->out.n - j->sent < max ? j->out.n - j->sent : max;
    if (n) memcpy(buf, j->out.p + j->sent, n), j->sent += n;
    pthread_mutex_unlock(&S.mu);
    return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls) { /* the response is done or the client left */
    job *j = cls;
    pthread_mutex_lock(&S.mu);
    j->cancelled = 1;
    job_unref(j);
    pthread_mutex_unlock(&S.mu);
}

/* Queues j for the worker and waits for its answer (or, streamed, its start). */
static enum MHD_Result run_job(struct MHD_Connection *c, job *j) {
    pthread_mutex_lock(&S.mu);
    if (S.stopping) {
        j->refs = 1;
        job_unref(j);
        pthread_mutex_unlock(&S.mu);
        return reply_error(c, 503, "the server is shutting down");
    }
    if (S.tail) S.tail->next = j;
    else S.head = j;
    S.tail = j;
    S.queued++;
    pthread_cond_broadcast(&S.cv);
    while (j->phase == PHASE_QUEUED) pthread_cond_wait(&j->cv, &S.mu);
    if (j->streaming) {
        pthread_mutex_unlock(&S.mu);
        struct MHD_Response *rsp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, j, stream_free);
        if (!rsp) {
            stream_free(j); /* our reference; the worker sees the cancel */
            return MHD_NO;
        }
        MHD_add_response_header(rsp, "Content-Type", "text/event-stream");
        MHD_add_response_header(rsp, "Cache-Control", "no-cache");
        const enum MHD_Result r = MHD_queue_response(c, 200, rsp);
        MHD_destroy_response(rsp); /* the response keeps j until stream_free */
        return r;
    }
    const unsigned status = j->status;
    char *body = j->body;
    j->body = NULL;
    job_unref(j);
    pthread_mutex_unlock(&S.mu);
    return reply(c, status, body ? body : error_json("server_error", "the request failed"), NULL);
}

/* POST /v1/completions */
static enum MHD_Result api_complete(struct MHD_Connection *c, json_object *o) {
    char msg[512];
    const char *prompt = NULL, *sid = NULL, *model = NULL, *user = NULL;
    size_t plen = 0, slen = 0, mlen = 0, ulen = 0;
    int64_t max_tokens = S.o.max_tokens < 16 ? S.o.max_tokens : 16, top_k = 0, seed = -1, nn = 1; /* OpenAI's default 16 */
    double temperature = 1.0, top_p = 1.0;
    int stream = 0;
    if (known_fields(o, "prompt,max_tokens,temperature,top_k,top_p,seed,stream,session,model,n,user", msg, sizeof msg) ||
        field_str(o, "prompt", &prompt, &plen, msg, sizeof msg) < 0 ||
        field_str(o, "session", &sid, &slen, msg, sizeof msg) < 0 ||
        field_str(o, "model", &model, &mlen, msg, sizeof msg) < 0 || field_str(o, "user", &user, &ulen, msg, sizeof msg) < 0 ||
        field_int(o, "max_tokens", 0, INT64_MAX, &max_tokens, msg, sizeof msg) < 0 ||
        field_num(o, "temperature", 0, 100, 0, &temperature, msg, sizeof msg) < 0 ||
        field_int(o, "top_k", 0, INT64_MAX, &top_k, msg, sizeof msg) < 0 ||
        field_num(o, "top_p", 0, 1, 1, &top_p, msg, sizeof msg) < 0 ||
        field_int(o, "seed", 0, INT64_MAX, &seed, msg, sizeof msg) < 0 ||
        field_int(o, "n", 1, 1, &nn, msg, sizeof msg) < 0 || field_bool(o, "stream", &stream, msg, sizeof msg) < 0)
        return reply_error(c, 400, "%s", msg);
    if (!prompt && !sid) return reply_error(c, 400, "missing field 'prompt' (a string; it may be empty with a session)");
    if (max_tokens > S.o.max_tokens)
        return reply_error(c, 400, "too many tokens: max_tokens %lld is over this server's limit of %lld (--max-tokens)",
                           (long long)max_tokens, (long long)S.o.max_tokens);
    if (sid && slen >= sizeof(((job *)0)->sid)) return reply_error(c, 404, "no session '%.60s...'", sid);
    job *j = job_new(J_COMPLETE);
    if (!j || !(j->text = malloc(plen + 1))) {
        free(j);
        return reply_error(c, 500, "out of memory");
    }
    if (plen) memcpy(j->text, prompt, plen);
    j->text[plen] = 0, j->text_len = plen;
    if (sid) memcpy(j->sid, sid, slen + 1);
    j->max_tokens = max_tokens, j->top_k = top_k, j->temperature = temperature, j->top_p = top_p, j->stream = stream;
    if (seed >= 0) j->seed = (uint64_t)seed;
    else { /* no seed: a fresh one each time */
        pthread_mutex_lock(&S.mu);
        j->seed = next_id() ^ (uint64_t)time(NULL);
        pthread_mutex_unlock(&S.mu);
    }
    return run_job(c, j);
}

/* POST /v1/sessions */
static enum MHD_Result api_session_new(struct MHD_Connection *c, json_object *o) {
    char msg[512];
    const char *doc = NULL;
    size_t len = 0;
    int r;
    if (known_fields(o, "document", msg, sizeof msg) || (r = field_str(o, "document", &doc, &len, msg, sizeof msg)) < 0)
        return reply_error(c, 400, "%s", msg);
    if (!r) return reply_error(c, 400, "missing field 'document' (a string: the text the session reads)");
    job *j = job_new(J_SESSION_NEW);
    if (!j || !(j->text = malloc(len + 1))) {
        free(j);
        return reply_error(c, 500, "out of memory");
    }
    memcpy(j->text, doc, len);
    j->text[len] = 0, j->text_len = len;
    return run_job(c, j);
}

/* POST /v1/sessions/{id}/save and POST /v1/sessions/load: {"name": NAME} */
static enum MHD_Result api_state(struct MHD_Connection *c, json_object *o, job_kind kind, const char *sid) {
    char msg[512];
    const char *name = NULL;
    size_t len = 0;
    int r;
    if (known_fields(o, "name", msg, sizeof msg) || (r = field_str(o, "name", &name, &len, msg, sizeof msg)) < 0)
        return reply_error(c, 400, "%s", msg);
    if (!r) return reply_error(c, 400, "missing field 'name' (the state file is --state-dir/NAME.state)");
    if (!valid_name(name, len))
        return reply_error(c, 400, "bad name '%.140s': use 1 to %d letters, digits, '-', '_' or '.', not starting with '.'",
                           name, NAME_MAX_LEN);
    job *j = job_new(kind);
    if (!j) return reply_error(c, 500, "out of memory");
    memcpy(j->name, name, len + 1);
    if (sid) snprintf(j->sid, sizeof j->sid, "%s", sid);
    return run_job(c, j);
}

static enum MHD_Result api_health(struct MHD_Connection *c) {
    json_object *o = json_object_new_object(), *m = json_object_new_object(), *l = json_object_new_object();
    const ttt_lm_config *cfg = &S.m.cfg; /* read-only after start */
    json_object_object_add(o, "status", json_object_new_string("ok"));
    json_object_object_add(m, "id", json_object_new_string(S.model_name));
    json_object_object_add(m, "kind", json_object_new_string(S.kind));
    json_object_object_add(m, "parameters", json_object_new_int64(S.params));
    json_object_object_add(m, "fingerprint", json_object_new_string(S.model_id));
    json_object_object_add(m, "step", json_object_new_int64(S.step));
    json_object_object_add(m, "vocab", json_object_new_int64(cfg->vocab));
    json_object_object_add(m, "dim", json_object_new_int64(cfg->dim));
    json_object_object_add(m, "depth", json_object_new_int64(cfg->depth));
    json_object_object_add(m, "heads", json_object_new_int64(cfg->heads));
    json_object_object_add(m, "window", json_object_new_int64(cfg->window));
    json_object_object_add(m, "prime_blocks", json_object_new_int64(cfg->prime_blocks));
    json_object_object_add(m, "inner_chunk", json_object_new_int64(cfg->inner_chunk));
    json_object_object_add(m, "device", json_object_new_string(S.device == TTT_CUDA ? "cuda" : "cpu"));
    json_object_object_add(o, "model", m);
    json_object_object_add(o, "tokenizer", json_object_new_string(S.tok_id));
    /* positions: what --max-context allows, and whether the model's own memory bounds it */
    json_object_object_add(l, "max_context", json_object_new_int64(S.max_context));
    json_object_object_add(l, "constant_memory", json_object_new_boolean(S.e2e || cfg->window > 0));
    json_object_object_add(l, "max_tokens", json_object_new_int64(S.o.max_tokens));
    json_object_object_add(l, "max_body", json_object_new_int64(S.o.max_body));
    json_object_object_add(l, "max_sessions", json_object_new_int64(S.o.max_sessions));
    json_object_object_add(l, "state_files", json_object_new_boolean(S.e2e && S.o.state_dir));
    json_object_object_add(o, "limits", l);
    pthread_mutex_lock(&S.mu);
    json_object_object_add(o, "sessions", json_object_new_int(S.n_sessions));
    json_object_object_add(o, "queued", json_object_new_int(S.queued));
    json_object_object_add(o, "served", json_object_new_int64((int64_t)S.served));
    pthread_mutex_unlock(&S.mu);
    return reply(c, 200, json_take(o), NULL);
}

static enum MHD_Result api_models(struct MHD_Connection *c) {
    json_object *o = json_object_new_object(), *a = json_object_new_array(), *m = json_object_new_object();
    json_object_object_add(m, "id", json_object_new_string(S.model_name));
    json_object_object_add(m, "object", json_object_new_string("model"));
    json_object_object_add(m, "owned_by", json_object_new_string("ttt"));
    json_object_object_add(m, "kind", json_object_new_string(S.kind));
    json_object_array_add(a, m);
    json_object_object_add(o, "object", json_object_new_string("list"));
    json_object_object_add(o, "data", a);
    return reply(c, 200, json_take(o), NULL);
}

/* GET /v1/sessions (id NULL) or /v1/sessions/{id}: sessions' facts never change, so the list is read here */
static enum MHD_Result api_sessions(struct MHD_Connection *c, const char *id) {
    json_object *o = NULL;
    pthread_mutex_lock(&S.mu);
    if (id) {
        session *s = find_session(id);
        if (s) o = session_json(s);
    } else {
        json_object *a = json_object_new_array();
        for (int i = 0; i < S.n_sessions; i++) json_object_array_add(a, session_json(S.sessions[i]));
        o = json_object_new_object();
        json_object_object_add(o, "object", json_object_new_string("list"));
        json_object_object_add(o, "data", a);
    }
    pthread_mutex_unlock(&S.mu);
    if (!o) return reply_error(c, 404, "no session '%.60s' (GET /v1/sessions lists them)", id);
    return reply(c, 200, json_take(o), NULL);
}

/* 1 if method is one of the list "A, B" */
static int method_in(const char *method, const char *list) {
    const size_t n = strlen(method);
    for (const char *p = list; n && (p = strstr(p, method)); p += n)
        if ((p == list || p[-1] == ' ') && (!p[n] || p[n] == ',')) return 1;
    return 0;
}

/* Routes: the path decides the endpoint, then the method must be one it takes. */
static enum MHD_Result dispatch(struct MHD_Connection *c, const char *url, const char *method, request *r) {
    static const char SESS[] = "/v1/sessions/";
    const size_t sl = sizeof SESS - 1;
    enum { R_HEALTH, R_MODELS, R_COMPLETE, R_SESSIONS, R_LOAD, R_SESSION, R_SAVE } route;
    char sid[64] = "";
    const char *allow;
    if (!strcmp(url, "/health")) route = R_HEALTH, allow = "GET";
    else if (!strcmp(url, "/v1/models")) route = R_MODELS, allow = "GET";
    else if (!strcmp(url, "/v1/completions")) route = R_COMPLETE, allow = "POST";
    else if (!strcmp(url, "/v1/sessions")) route = R_SESSIONS, allow = "GET, POST";
    else if (!strcmp(url, "/v1/sessions/load")) route = R_LOAD, allow = "POST";
    else if (!strncmp(url, SESS, sl) && url[sl] && strlen(url + sl) < sizeof sid) {
        snprintf(sid, sizeof sid, "%s", url + sl);
        char *slash = strchr(sid, '/');
        if (!slash) route = R_SESSION, allow = "GET, DELETE";
        else if (!strcmp(slash, "/save") && slash != sid) *slash = 0, route = R_SAVE, allow = "POST";
        else return reply_error(c, 404, "no such endpoint: %.200s %.200s", method, url);
    } else
        return reply_error(c, 404, "no such endpoint: %.200s %.200s (see GET /health, POST /v1/completions, /v1/sessions)",
                           method, url);
    if (!method_in(method, allow)) {
        char *b = error_json("method_not_allowed", "%.20s is not allowed on %.200s (allowed: %s)", method, url, allow);
        return reply(c, 405, b, allow);
    }
    if (r->too_big)
        return reply_error(c, 413, "the body is over the limit of %lld bytes (--max-body)", (long long)S.o.max_body);
    if (!strcmp(method, "GET")) {
        if (route == R_HEALTH) return api_health(c);
        if (route == R_MODELS) return api_models(c);
        return api_sessions(c, route == R_SESSION ? sid : NULL);
    }
    if (!strcmp(method, "DELETE")) {
        job *j = job_new(J_SESSION_DELETE);
        if (!j) return reply_error(c, 500, "out of memory");
        snprintf(j->sid, sizeof j->sid, "%s", sid);
        return run_job(c, j);
    }
    char msg[300];
    json_object *o = parse_body(r, msg, sizeof msg);
    if (!o) return reply_error(c, 400, "%s", msg);
    enum MHD_Result res = route == R_COMPLETE   ? api_complete(c, o)
                          : route == R_SESSIONS ? api_session_new(c, o)
                          : route == R_LOAD     ? api_state(c, o, J_SESSION_LOAD, NULL)
                                                : api_state(c, o, J_SESSION_SAVE, sid);
    json_object_put(o);
    return res;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **req_cls) {
    (void)cls, (void)version;
    request *r = *req_cls;
    if (!r) { /* the headers: nothing read yet */
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        r->t0 = cli_now();
        snprintf(r->what, sizeof r->what, "%.10s %.100s", method, url);
        *req_cls = r;
        pthread_mutex_lock(&S.mu);
        S.active++;
        pthread_mutex_unlock(&S.mu);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > drop_cap()) /* too big to read and throw away */
            return reply_error(c, 413, "the body is over the limit of %lld bytes (--max-body)", (long long)S.o.max_body);
        return MHD_YES;
    }
    if (*size) { /* a piece of the body */
        if (!r->too_big && r->body.n + *size <= (size_t)S.o.max_body) {
            if (buf_add(&r->body, data, *size)) return MHD_NO;
        } else {
            r->too_big = 1;
            free(r->body.p), r->body = (buf_t){0};
            if ((r->dropped += *size) > drop_cap()) return MHD_NO; /* close the connection */
        }
        *size = 0;
        return MHD_YES;
    }
    return dispatch(c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    request *r = *req_cls;
    if (!r) return;
    if (!S.o.quiet) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        fprintf(stderr, "ttt serve: %s %u %.3f s%s\n", r->what, ci ? ci->http_status : 0, cli_now() - r->t0,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    }
    free(r->body.p);
    free(r);
    *req_cls = NULL;
    pthread_mutex_lock(&S.mu);
    S.active--, S.served++;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

/* ---- main ----------------------------------------------------------------------------------------- */

int cmd_serve(int argc, char **argv) {
    int rc = parse(argc, argv, &S.o);
    if (rc >= 0) return rc;
    /* the address: loopback unless asked */
    struct sockaddr_in6 a6 = {0};
    struct sockaddr_in a4 = {0};
    int v6 = 0;
    const char *host = !strcmp(S.o.host, "localhost") ? "127.0.0.1" : S.o.host;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET, a4.sin_port = htons((uint16_t)S.o.port);
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6, a6.sin6_port = htons((uint16_t)S.o.port), v6 = 1;
    } else {
        fprintf(stderr, "ttt serve: --host %s: expected an IPv4 or IPv6 address (e.g. 127.0.0.1, ::1) or localhost\n",
                S.o.host);
        return EXIT_USAGE;
    }
    const int loopback = v6 ? IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr) : (ntohl(a4.sin_addr.s_addr) >> 24) == 127;
    if (S.o.state_dir) {
        struct stat st;
        if (make_dirs(S.o.state_dir) != 0 || stat(S.o.state_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
            access(S.o.state_dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "ttt serve: --state-dir %s: not a writable directory (%s)\n", S.o.state_dir, strerror(errno));
            return EXIT_RUNTIME;
        }
    }
    /* ids nobody can guess from the last one */
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&S.id_key, sizeof S.id_key, 1, ur) != 1) S.id_key = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (ur) fclose(ur);

    /* SIGINT / SIGTERM are taken by sigwait below: blocked in every thread, which inherit the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-answer is an error return, not a death */

    pthread_t wt;
    if (pthread_create(&wt, NULL, worker, NULL) != 0) {
        fprintf(stderr, "ttt serve: cannot start the worker thread\n");
        return EXIT_RUNTIME;
    }
    pthread_mutex_lock(&S.mu);
    while (!S.started) pthread_cond_wait(&S.cv, &S.mu);
    rc = S.start_rc;
    pthread_mutex_unlock(&S.mu);
    struct MHD_Daemon *d = NULL;
    if (!rc) {
        const unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                               MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
        d = MHD_start_daemon(flags, (uint16_t)S.o.port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
                             v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4, MHD_OPTION_CONNECTION_LIMIT,
                             (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
        if (!d) {
            fprintf(stderr, "ttt serve: cannot listen on %s port %lld (in use, or not an address of this machine?)\n",
                    S.o.host, (long long)S.o.port);
            rc = EXIT_RUNTIME;
        }
    }
    if (rc) {
        pthread_mutex_lock(&S.mu);
        S.worker_exit = 1;
        pthread_cond_broadcast(&S.cv);
        pthread_mutex_unlock(&S.mu);
        pthread_join(wt, NULL);
        return rc;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const unsigned port = di ? di->port : (unsigned)S.o.port;
    fprintf(stderr, "ttt serve: %s model %s (%lld parameters, step %lld, %s), context limit %lld, up to %lld tokens "
                    "per completion\n", S.kind, S.model_name, (long long)S.params, (long long)S.step,
            S.device == TTT_CUDA ? "cuda" : "cpu", (long long)S.max_context, (long long)S.o.max_tokens);
    if (!loopback)
        fprintf(stderr, "ttt serve: warning: listening on %s, reachable from other machines; there is no authentication\n",
                S.o.host);
    fprintf(stderr, "ttt serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "", port);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {}
    pthread_mutex_lock(&S.mu);
    S.stopping = 1; /* requests on open connections now get 503 */
    fprintf(stderr, "ttt serve: %s: stopping: no new connections; finishing %d request(s) in flight\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", S.active);
    pthread_mutex_unlock(&S.mu);
    const MHD_socket ls = MHD_quiesce_daemon(d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    const double t_end = cli_now() + SHUTDOWN_WAIT_S;
    pthread_mutex_lock(&S.mu);
    while (S.active > 0 && cli_now() < t_end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&S.cv, &S.mu, &ts);
    }
    const int left = S.active;
    pthread_mutex_unlock(&S.mu);
    if (left)
        fprintf(stderr, "ttt serve: %d request(s) still running after %d s: closing their connections\n", left,
                SHUTDOWN_WAIT_S);
    MHD_stop_daemon(d); /* closes the connections left, joins their threads */
    pthread_mutex_lock(&S.mu);
    S.worker_exit = 1;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    pthread_join(wt, NULL);
    fprintf(stderr, "ttt serve: stopped after %llu request(s)\n", (unsigned long long)S.served);
    return 0;
}

#endif /* TTT_HAVE_MHD */
