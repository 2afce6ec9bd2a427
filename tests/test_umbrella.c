/* include/ttt/ttt.h is the one header a user needs: this file includes only
 * it (and libc) and takes a symbol from every public header, so a header
 * left out of ttt.h fails the build; at run time it also lists include/ttt
 * and fails for any header ttt.h does not name (backend.h excepted: it is
 * for backend authors). */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "ttt/ttt.h"

static int failed;

/* One symbol per header, as function pointers so nothing runs. */
static const void *const SYMBOLS[] = {
    (const void *)ttt_grad,                /* autodiff.h */
    (const void *)ttt_save_safetensors,    /* checkpoint.h */
    (const void *)ttt_vision_tokens,       /* data.h */
    (const void *)ttt_gradcheck_count,     /* gradcheck.h */
    (const void *)ttt_gguf_open,           /* gguf.h */
    (const void *)ttt_graph_begin,         /* graph.h */
    (const void *)ttt_idx_load,            /* io.h */
    (const void *)ttt_recon_learner_init,  /* layers.h */
    (const void *)ttt_llama_load,          /* llama.h */
    (const void *)ttt_lm_init,             /* lm.h */
    (const void *)ttt_mttt_init,           /* mttt.h */
    (const void *)ttt_add,                 /* ops.h */
    (const void *)ttt_optimizer_step,      /* optim.h */
    (const void *)ttt_device_count,        /* runtime.h */
    (const void *)ttt_shard_open,          /* shards.h */
    (const void *)ttt_task_generate,       /* tasks.h */
    (const void *)ttt_ctx_new,             /* tensor.h */
    (const void *)ttt_tokenizer_load_gpt2, /* tokenizer.h */
    (const void *)ttt_vit_init,            /* vit.h */
};

int main(void) {
    for (size_t i = 0; i < sizeof SYMBOLS / sizeof SYMBOLS[0]; i++)
        if (!SYMBOLS[i]) failed++, fprintf(stderr, "symbol %zu is NULL\n", i);
    /* every header in include/ttt (beside this file's folder) must be named in ttt.h */
    char dir[4096], umbrella[4096];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        fprintf(stderr, "cannot find include/ttt from %s\n", __FILE__);
        return 1;
    }
    *slash = 0;
    slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;
    strncat(dir, "include/ttt", sizeof dir - strlen(dir) - 1);
    snprintf(umbrella, sizeof umbrella, "%s/ttt.h", dir);
    FILE *f = fopen(umbrella, "r");
    DIR *d = opendir(dir);
    if (!f || !d) {
        fprintf(stderr, "cannot open %s\n", f ? dir : umbrella);
        return 1;
    }
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    int headers = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".h") || !strcmp(e->d_name, "ttt.h") ||
            !strcmp(e->d_name, "backend.h"))
            continue;
        headers++;
        char inc[512];
        snprintf(inc, sizeof inc, "#include \"ttt/%s\"", e->d_name);
        if (!strstr(text, inc)) failed++, fprintf(stderr, "include/ttt/ttt.h does not include ttt/%s\n", e->d_name);
    }
    closedir(d);
    if (headers < 10) failed++, fprintf(stderr, "only %d headers found in %s\n", headers, dir);
    printf("%d headers, %d failed\n", headers, failed);
    return failed ? 1 : 0;
}
