#include "worker/cli/cli_engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    OPT_DEPTH = CLI_ENGINE_OPT_BASE,
    OPT_MAX_DEPTH,
    OPT_NGRAM,
    OPT_NO_SPEC,
    OPT_CTX,
    OPT_BLOCK,
    OPT_KV_MIB,
    OPT_MAX_SEQS,
    OPT_MAX_TOKENS_STEP,
    OPT_BACKEND,
    OPT_NO_PREFIX,
};

const struct option cli_engine_options[] = {
    {"model", required_argument, 0, 'm'},
    {"draft", required_argument, 0, 'd'},
    {"threads", required_argument, 0, 't'},
    {"depth", required_argument, 0, OPT_DEPTH},
    {"max-depth", required_argument, 0, OPT_MAX_DEPTH},
    {"ngram", no_argument, 0, OPT_NGRAM},
    {"no-spec", no_argument, 0, OPT_NO_SPEC},
    {"ctx", required_argument, 0, OPT_CTX},
    {"block-size", required_argument, 0, OPT_BLOCK},
    {"kv-mib", required_argument, 0, OPT_KV_MIB},
    {"max-seqs", required_argument, 0, OPT_MAX_SEQS},
    {"max-batch-tokens", required_argument, 0, OPT_MAX_TOKENS_STEP},
    {"backend", required_argument, 0, OPT_BACKEND},
    {"no-prefix-cache", no_argument, 0, OPT_NO_PREFIX},
    {0, 0, 0, 0},
};

int cli_engine_merge_options(const struct option *own, int n_own, struct option *all, int cap) {
    int n = 0;
    for (int i = 0; i < n_own && n < cap - 1; i++)
        all[n++] = own[i];
    for (int i = 0; cli_engine_options[i].name && n < cap - 1; i++)
        all[n++] = cli_engine_options[i];
    memset(&all[n], 0, sizeof all[n]);
    return n;
}

void cli_engine_usage(FILE *to) {
    fprintf(to,
            "model and speculation:\n"
            "  -m, --model FILE        target model (GGUF, architecture llama)\n"
            "  -d, --draft FILE        draft model with the target's tokenizer: speculative\n"
            "                          decoding with the draft proposing tokens\n"
            "      --ngram             speculate with n-gram prompt lookup instead (no draft)\n"
            "      --depth K           draft tokens per step (default 4; 0 = plain decoding)\n"
            "      --max-depth K       runtime maximum the controller may set (default 8, <= 16)\n"
            "      --no-spec           plain decoding even when -d or --ngram is given\n"
            "engine:\n"
            "      --backend NAME      compute backend: cpu (default)\n"
            "  -t, --threads N         CPU threads (default: all CPUs)\n"
            "      --ctx N             max tokens per sequence (default: the model's context)\n"
            "      --block-size N      KV cache block size in tokens (default 16)\n"
            "      --kv-mib N          KV cache memory of the target in MiB (default 256)\n"
            "      --max-seqs N        sequences per step (default 64)\n"
            "      --max-batch-tokens N  target tokens per step, drafts included (default 512)\n"
            "      --no-prefix-cache   do not reuse KV blocks of shared prompt prefixes\n");
}

int cli_parse_int(const char *prog, const char *name, const char *arg, long lo, long hi,
                  long *out) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s wants an integer in %ld..%ld, got '%s'\n", prog, name, lo, hi,
                arg);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *prog, const char *name, const char *arg, double lo, double hi,
                    double *out) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: --%s wants a number in [%g, %g], got '%s'\n", prog, name, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_engine_option(int opt, const char *arg, struct engine_params *p, const char *prog) {
    long v;
    switch (opt) {
    case 'm':
        p->target_path = arg;
        return 1;
    case 'd':
        p->draft_path = arg;
        if (p->proposer != ENGINE_PROPOSER_NGRAM)
            p->proposer = ENGINE_PROPOSER_DRAFT;
        return 1;
    case OPT_NGRAM:
        p->proposer = ENGINE_PROPOSER_NGRAM;
        return 1;
    case OPT_NO_SPEC:
        p->depth = 0;
        return 1;
    case OPT_BACKEND:
        p->backend = arg;
        return 1;
    case OPT_NO_PREFIX:
        p->prefix_caching = false;
        return 1;
    }
    struct {
        int opt;
        const char *name;
        long lo, hi;
    } ints[] = {{'t', "threads", 1, 1024},
                {OPT_DEPTH, "depth", 0, 16},
                {OPT_MAX_DEPTH, "max-depth", 0, 16},
                {OPT_CTX, "ctx", 2, 1 << 20},
                {OPT_BLOCK, "block-size", 1, 4096},
                {OPT_KV_MIB, "kv-mib", 1, 1 << 20},
                {OPT_MAX_SEQS, "max-seqs", 1, 65536},
                {OPT_MAX_TOKENS_STEP, "max-batch-tokens", 2, 1 << 20}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (ints[i].opt != opt)
            continue;
        if (cli_parse_int(prog, ints[i].name, arg, ints[i].lo, ints[i].hi, &v))
            return -1;
        switch (opt) {
        case 't':
            p->n_threads = (int)v;
            break;
        case OPT_DEPTH:
            p->depth = (int32_t)v;
            break;
        case OPT_MAX_DEPTH:
            p->max_depth = (int32_t)v;
            break;
        case OPT_CTX:
            p->n_ctx = (int32_t)v;
            break;
        case OPT_BLOCK:
            p->block_size = (int32_t)v;
            break;
        case OPT_KV_MIB:
            p->kv_budget_bytes = (int64_t)v << 20;
            break;
        case OPT_MAX_SEQS:
            p->max_num_seqs = (int32_t)v;
            break;
        case OPT_MAX_TOKENS_STEP:
            p->max_num_batched_tokens = (int32_t)v;
            break;
        }
        return 1;
    }
    return 0;
}
