// specd-bench: speculative-decoding benchmark. Runs a prompt file through the engine once per
// configuration (plain decoding, then draft depths 1..8 and/or n-gram) and prints one table:
// tokens/s, speedup over plain decoding, acceptance, mean tokens per sequence-step, step-time
// breakdown, and the memory-bandwidth bound for the run.
//
// Exit status: 0 success, 1 failure, 2 bad usage.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "shared/text.h"
#include "worker/cli/cli_engine.h"
#include "worker/engine/model.h"
#include "worker/engine/tok.h"

#define PROG "specd-bench"

struct bench_opts {
    struct engine_params ep;
    const char *file;
    int max_tokens;
    int n_prompts;
    int parallel;
    int depths[SPEC_MAX_DEPTH + 1];
    int n_depths;
    bool markdown;
    float temperature;
};

struct bench_row {
    char name[32];
    double secs;
    uint64_t tokens, steps, drafted, accepted, seq_steps;
    double t_draft, t_verify, t_step;
};

static void usage(FILE *to) {
    fprintf(to,
            "usage: " PROG " -m TARGET.gguf [-d DRAFT.gguf | --ngram] -f PROMPTS.txt [options]\n"
            "\n"
            "Runs the prompts once with plain decoding and once per draft depth, and prints\n"
            "tokens/s, acceptance, mean tokens per sequence-step and where the step time goes.\n"
            "\n"
            "  -f, --file FILE      prompts, one per line (\\n escapes)\n"
            "  -n, --max-tokens N   tokens per prompt (default 64)\n"
            "      --prompts N      use the first N prompts (default 20)\n"
            "      --parallel N     sequences decoded together (default 1)\n"
            "      --depths LIST    comma-separated depths, 0 = plain (default 0,1,2,3,4,5,6,7,8)\n"
            "      --temp T         sampling temperature (default 0: greedy)\n"
            "      --markdown       print a Markdown table\n");
    cli_engine_usage(to);
    fprintf(to, "  -h, --help           show this help\n");
}

static int parse_depths(const char *s, struct bench_opts *o) {
    o->n_depths = 0;
    for (const char *p = s; *p;) {
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p || d < 0 || d > SPEC_MAX_DEPTH || o->n_depths == SPEC_MAX_DEPTH + 1)
            return -1;
        o->depths[o->n_depths++] = (int)d;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return o->n_depths > 0 ? 0 : -1;
}

enum { OPT_PROMPTS = 1, OPT_PARALLEL, OPT_DEPTHS, OPT_MARKDOWN, OPT_TEMP };

static int parse_args(int argc, char **argv, struct bench_opts *o) {
    static const struct option own[] = {{"file", required_argument, 0, 'f'},
                                        {"max-tokens", required_argument, 0, 'n'},
                                        {"prompts", required_argument, 0, OPT_PROMPTS},
                                        {"parallel", required_argument, 0, OPT_PARALLEL},
                                        {"depths", required_argument, 0, OPT_DEPTHS},
                                        {"markdown", no_argument, 0, OPT_MARKDOWN},
                                        {"temp", required_argument, 0, OPT_TEMP},
                                        {"help", no_argument, 0, 'h'}};
    struct option all[64];
    cli_engine_merge_options(own, (int)(sizeof own / sizeof own[0]), all,
                             (int)(sizeof all / sizeof all[0]));
    int c;
    long v;
    double f;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "f:n:h" CLI_ENGINE_SHORT, all, NULL)) != -1) {
        int shared = cli_engine_option(c, optarg, &o->ep, PROG);
        if (shared < 0)
            return 2;
        if (shared > 0)
            continue;
        switch (c) {
        case 'f':
            o->file = optarg;
            break;
        case 'n':
            if (cli_parse_int(PROG, "max-tokens", optarg, 1, 1 << 20, &v))
                return 2;
            o->max_tokens = (int)v;
            break;
        case OPT_PROMPTS:
            if (cli_parse_int(PROG, "prompts", optarg, 1, 1 << 20, &v))
                return 2;
            o->n_prompts = (int)v;
            break;
        case OPT_PARALLEL:
            if (cli_parse_int(PROG, "parallel", optarg, 1, 65536, &v))
                return 2;
            o->parallel = (int)v;
            break;
        case OPT_DEPTHS:
            if (parse_depths(optarg, o)) {
                fprintf(stderr, PROG ": --depths wants numbers 0..%d separated by commas\n",
                        SPEC_MAX_DEPTH);
                return 2;
            }
            break;
        case OPT_MARKDOWN:
            o->markdown = true;
            break;
        case OPT_TEMP:
            if (cli_parse_float(PROG, "temp", optarg, 0, 100, &f))
                return 2;
            o->temperature = (float)f;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, PROG ": unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!o->ep.target_path || !o->file) {
        fprintf(stderr, PROG ": -m TARGET.gguf and -f PROMPTS.txt are required (see --help)\n");
        return 2;
    }
    return -1;
}

// Runs all prompts with draft depth `depth` (0: plain) and fills *row.
static int bench_config(const struct bench_opts *o, char **prompts, int n_prompts, int depth,
                        struct bench_row *row) {
    struct engine_params ep = o->ep;
    ep.depth = depth;
    if (ep.max_depth < depth)
        ep.max_depth = depth;
    if (depth == 0)
        ep.proposer = ENGINE_PROPOSER_NONE;
    engine *e = NULL;
    char err[512];
    if (engine_new(&ep, &e, err, sizeof err)) {
        fprintf(stderr, PROG ": %s\n", err);
        return 1;
    }
    memset(row, 0, sizeof *row);
    snprintf(row->name, sizeof row->name, "%s", depth == 0 ? "plain" : "");
    if (depth > 0)
        snprintf(row->name, sizeof row->name, "%s k=%d",
                 ep.proposer == ENGINE_PROPOSER_NGRAM ? "ngram" : "draft", depth);
    int next = 0, rc = 0;
    uint64_t *ids = calloc((size_t)n_prompts, sizeof *ids);
    const double t0 = clock_now_ms();
    while (!rc && (next < n_prompts || engine_has_work(e))) {
        while (next < n_prompts && engine_n_unfinished(e) < o->parallel) {
            int32_t toks[4096];
            int n = tok_encode(engine_tokenizer(e), prompts[next], strlen(prompts[next]), true,
                               false, toks, 4096);
            struct engine_request r = {.prompt = toks,
                                       .n_prompt = n > 0 ? n : 0,
                                       .max_tokens = o->max_tokens,
                                       .ignore_eos = true,
                                       .sampling = sampler_default_params()};
            r.sampling.temperature = o->temperature;
            r.sampling.seed = (uint64_t)next + 1;
            if (engine_add(e, &r, &ids[next], err, sizeof err)) {
                fprintf(stderr, PROG ": prompt %d: %s\n", next, err);
                rc = 1;
            }
            next++;
        }
        struct spec_step_metrics m;
        if (engine_step(e, &m) < 0)
            rc = 1;
        row->steps++;
        row->seq_steps += m.n_speculating;
        row->t_draft += m.t_draft_ms;
        row->t_verify += m.t_verify_ms;
        row->t_step += m.t_step_ms;
    }
    row->secs = (clock_now_ms() - t0) / 1000.0;
    for (int i = 0; i < n_prompts; i++) {
        struct engine_output out;
        if (engine_get_output(e, ids[i], &out) == 0) {
            row->tokens += (uint64_t)out.n_tokens;
            row->drafted += out.drafted;
            row->accepted += out.accepted;
        }
    }
    free(ids);
    engine_free(e);
    return rc;
}

// Best of 5 memcpy passes over 256 MiB: bytes read + written per second.
static double measure_bandwidth(void) {
    const size_t n = 256u << 20;
    char *a = malloc(n), *b = malloc(n);
    double best = 0;
    if (a && b) {
        memset(a, 1, n);
        memset(b, 2, n);
        for (int i = 0; i < 5; i++) {
            const double t0 = clock_now_ms();
            memcpy(i % 2 ? a : b, i % 2 ? b : a, n);
            const double bw = 2.0 * (double)n / ((clock_now_ms() - t0) / 1000.0);
            best = bw > best ? bw : best;
        }
    }
    free(a);
    free(b);
    return best;
}

// The physical limit of plain batch-1 decoding: every token streams all target weights.
static void print_limits(const struct bench_opts *o, double plain_tps) {
    llama_model *m = NULL;
    char err[256];
    if (llama_model_load(o->ep.target_path, &m, err, sizeof err))
        return;
    const double bytes = (double)llama_model_weight_bytes(m), bw = measure_bandwidth();
    printf("%s target weights %.1f MB/token; memcpy bandwidth %.1f GB/s -> bound %.0f tokens/s "
           "for batch-1 plain decoding; measured plain %.1f tokens/s = %.1f%% of the bound%s\n",
           o->markdown ? "\n" : "", bytes / 1e6, bw / 1e9, bw / bytes, plain_tps,
           100.0 * plain_tps / (bw / bytes),
           o->parallel > 1 ? " (batched runs share weight reads: the bound is per sequence)" : "");
    llama_model_free(m);
}

static void print_row(const struct bench_opts *o, const struct bench_row *r, double base_tps) {
    const double tps = r->tokens / r->secs, steps = r->steps ? (double)r->steps : 1;
    const double mean_len = r->seq_steps ? (double)(r->accepted + r->seq_steps) / r->seq_steps : 1;
    const double other = (r->t_step - r->t_draft - r->t_verify) / steps;
    if (o->markdown)
        printf("| %s | %.1f | %.2fx | %s%.3f | %.2f | %llu | %.2f | %.2f | %.2f |\n", r->name, tps,
               tps / base_tps, "", r->drafted ? (double)r->accepted / r->drafted : 0.0, mean_len,
               (unsigned long long)r->steps, r->t_draft / steps, r->t_verify / steps, other);
    else
        printf("%-10s %9.1f %8.2fx %10.3f %9.2f %7llu %9.2f %9.2f %8.2f\n", r->name, tps,
               tps / base_tps, r->drafted ? (double)r->accepted / r->drafted : 0.0, mean_len,
               (unsigned long long)r->steps, r->t_draft / steps, r->t_verify / steps, other);
    fflush(stdout);
}

int main(int argc, char **argv) {
    struct bench_opts o = {.ep = engine_default_params(),
                           .max_tokens = 64,
                           .n_prompts = 20,
                           .parallel = 1,
                           .n_depths = 9};
    for (int i = 0; i <= 8; i++)
        o.depths[i] = i;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    rc = 0;
    if (o.ep.proposer == ENGINE_PROPOSER_NONE)
        o.ep.proposer = ENGINE_PROPOSER_NGRAM;
    o.ep.max_depth = SPEC_MAX_DEPTH;
    char **prompts = NULL;
    int n = text_read_prompts(o.file, &prompts);
    if (n <= 0) {
        fprintf(stderr, PROG ": cannot read prompts from %s\n", o.file);
        return 1;
    }
    if (n > o.n_prompts)
        n = o.n_prompts;
    if (o.markdown)
        printf("| config | tokens/s | vs plain | acceptance | tokens/seq-step | steps | draft "
               "ms/step | verify ms/step | other ms/step |\n|---|---:|---:|---:|---:|---:|---:|"
               "---:|---:|\n");
    else
        printf("%-10s %9s %9s %10s %9s %7s %9s %9s %8s\n", "config", "tok/s", "vs plain", "accept",
               "tok/step", "steps", "draft ms", "verify ms", "other ms");
    double base = 0;
    for (int i = 0; i < o.n_depths && !rc; i++) {
        struct bench_row row;
        rc = bench_config(&o, prompts, n, o.depths[i], &row);
        if (rc)
            break;
        if (base == 0)
            base = row.tokens / row.secs;
        print_row(&o, &row, base);
    }
    if (!rc && base > 0)
        print_limits(&o, base);
    text_free_lines(prompts, n);
    return rc;
}
