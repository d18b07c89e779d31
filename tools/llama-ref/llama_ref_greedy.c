// llama-ref-greedy: runs llama.cpp itself (libllama, built outside this repository by
// tools/llama-ref/check.sh) over a ../shared/refs file and reports how closely llama.cpp reproduces
// its own reference outputs: greedy continuations and the first position's top-5 logits. The
// summary line has the same form as tests/unit/test_model.c prints for specd, so the two can be
// set side by side (docs/numerics.md).
//
// Usage: llama-ref-greedy -m MODEL.gguf -r REFS.jsonl [-t THREADS] [--no-repack] [--fa on|off|auto]
// Exit status: 0 ran (agreement is reported, not judged), 1 failure, 2 bad usage.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "tests/support/refs.h"

#define MATCH_TOKENS 32

struct options {
    const char *model;
    const char *refs;
    int threads;
    int no_repack;
    enum llama_flash_attn_type fa;
};

static void usage(FILE *f) {
    fprintf(f, "usage: llama-ref-greedy -m MODEL.gguf -r REFS.jsonl [-t THREADS] [--no-repack]\n"
               "                        [--fa on|off|auto]\n"
               "Greedy-decodes every prompt of REFS with llama.cpp and compares with REFS.\n");
}

static int parse(int argc, char **argv, struct options *o) {
    *o = (struct options){NULL, NULL, 2, 0, LLAMA_FLASH_ATTN_TYPE_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--no-repack")) {
            o->no_repack = 1;
        } else if (v && !strcmp(a, "-m")) {
            o->model = argv[++i];
        } else if (v && !strcmp(a, "-r")) {
            o->refs = argv[++i];
        } else if (v && !strcmp(a, "-t")) {
            o->threads = atoi(argv[++i]);
        } else if (v && !strcmp(a, "--fa")) {
            i++;
            o->fa = !strcmp(v, "on")    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                    : !strcmp(v, "off") ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                        : LLAMA_FLASH_ATTN_TYPE_AUTO;
        } else {
            fprintf(stderr, "llama-ref-greedy: unknown or incomplete option '%s'\n", a);
            return -1;
        }
    }
    if (!o->model || !o->refs || o->threads < 1) {
        fprintf(stderr, "llama-ref-greedy: -m and -r are required\n");
        return -1;
    }
    return 0;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

// One case in a fresh context: the prompt in one batch, then one token per decode, as
// llama-simple does. Writes the continuation to out and the first position's logits to first.
static int run_case(struct llama_model *model, const struct options *o, const struct ref_case *c,
                    int n_gen, int32_t *out, float *first) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_threads = cp.n_threads_batch = o->threads;
    cp.flash_attn_type = o->fa;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx)
        return -1;
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    int rc = llama_decode(ctx, llama_batch_get_one((llama_token *)c->prompt_tokens, c->n_prompt));
    for (int i = 0; i < n_gen && rc == 0; i++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        if (i == 0)
            memcpy(first, logits, sizeof(float) * n_vocab);
        out[i] = argmax(logits, n_vocab);
        rc = llama_decode(ctx, llama_batch_get_one(&out[i], 1));
    }
    llama_free(ctx);
    return rc;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

int main(int argc, char **argv) {
    struct options o;
    if (parse(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = !o.no_repack;
    struct llama_model *model = llama_model_load_from_file(o.model, mp);
    if (!model) {
        fprintf(stderr, "llama-ref-greedy: cannot load %s\n", o.model);
        return 1;
    }
    struct ref_case *cases = NULL;
    int n = refs_load(o.refs, &cases);
    if (n <= 0) {
        fprintf(stderr, "llama-ref-greedy: cannot read %s\n", o.refs);
        llama_model_free(model);
        return 1;
    }
    float *first = malloc(sizeof(float) * llama_vocab_n_tokens(llama_model_get_vocab(model)));
    int full = 0, same_total = 0, total = 0, rc = 0;
    double sq = 0, worst = 0;
    for (int c = 0; c < n && rc == 0; c++) {
        int32_t out[64];
        const int n_gen = cases[c].n_tokens < 64 ? cases[c].n_tokens : 64;
        rc = run_case(model, &o, &cases[c], n_gen, out, first);
        int same = 0;
        while (same < n_gen && out[same] == cases[c].tokens[same])
            same++;
        if (same < n_gen)
            printf("  case %d: same for %d tokens, then %d vs ref %d\n", c, same, out[same],
                   cases[c].tokens[same]);
        full += same >= MATCH_TOKENS || same == n_gen;
        same_total += same;
        total += n_gen;
        for (int i = 0; i < 5; i++) {
            double d = fabs(first[cases[c].top5_ids[i]] - cases[c].top5_logits[i]);
            sq += d * d;
            worst = d > worst ? d : worst;
        }
    }
    if (rc == 0)
        printf("%s: %d of %d prompts agree on the first %d tokens; %d of %d tokens; first-position "
               "top-5 logits differ by %.4f rms, %.4f max\n",
               o.refs, full, n, MATCH_TOKENS, same_total, total, sqrt(sq / (5.0 * n)), worst);
    else
        fprintf(stderr, "llama-ref-greedy: llama_decode failed (%d)\n", rc);
    free(first);
    refs_free(cases, n);
    llama_model_free(model);
    llama_backend_free();
    return rc == 0 ? 0 : 1;
}
