// specd-generate: generate text from prompts with the specd engine (continuous batching and
// speculative decoding on the CPU backend).
//
// Exit status: 0 success, 1 failure (bad model file, engine error), 2 bad usage.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "shared/text.h"
#include "worker/cli/cli_engine.h"
#include "worker/engine/tok.h"

#define PROG "specd-generate"

struct gen_opts {
    struct engine_params ep;
    struct engine_request req;
    const char *prompt;
    const char *file;
    bool json;
    bool add_bos;
    int parallel;
    const char *stops[16];
    int n_stop;
};

static void usage(FILE *to) {
    fprintf(to,
            "usage: " PROG " -m MODEL.gguf [-p PROMPT | -f FILE] [options]\n"
            "\n"
            "Generates a continuation of each prompt. With -d DRAFT.gguf (or --ngram) the\n"
            "engine decodes speculatively; the output is the same as plain decoding for greedy\n"
            "requests and has the same distribution when sampling.\n"
            "\n"
            "prompts and output:\n"
            "  -p, --prompt TEXT       the prompt\n"
            "  -f, --file FILE         one prompt per line (\\n, \\t, \\\\ escapes)\n"
            "  -n, --max-tokens N      tokens to generate per prompt (default 64)\n"
            "      --parallel N        run up to N prompts of FILE as one continuous batch\n"
            "                          (default 1: one after the other)\n"
            "      --json              one JSON object per prompt instead of text\n"
            "      --stop STR          stop before STR (repeatable, up to 16)\n"
            "      --ignore-eos        keep generating past end-of-sequence tokens\n"
            "      --no-bos            do not add the BOS token to prompts\n"
            "      --class NAME        request class (per-class depth and metrics)\n"
            "sampling (default greedy):\n"
            "      --temp T            temperature; 0 = greedy (default 0)\n"
            "      --top-k K           keep the K most likely tokens (0 = off)\n"
            "      --top-p P           keep the smallest set with probability >= P (1 = off)\n"
            "      --seed S            seed of the request's random generator (default 1)\n");
    cli_engine_usage(to);
    fprintf(to, "  -h, --help              show this help\n"
                "\nexample:\n"
                "  " PROG " -m target-q8_0.gguf -d draft-q8_0.gguf -p 'def main(' -n 48\n");
}

static int bad_usage(const char *msg) {
    fprintf(stderr, PROG ": %s\n(see " PROG " --help)\n", msg);
    return 2;
}

enum {
    OPT_JSON = 1,
    OPT_PARALLEL,
    OPT_STOP,
    OPT_IGNORE_EOS,
    OPT_NO_BOS,
    OPT_CLASS,
    OPT_TEMP,
    OPT_TOPK,
    OPT_TOPP,
    OPT_SEED
};

static int parse_args(int argc, char **argv, struct gen_opts *o) {
    static const struct option own[] = {{"prompt", required_argument, 0, 'p'},
                                        {"file", required_argument, 0, 'f'},
                                        {"max-tokens", required_argument, 0, 'n'},
                                        {"json", no_argument, 0, OPT_JSON},
                                        {"parallel", required_argument, 0, OPT_PARALLEL},
                                        {"stop", required_argument, 0, OPT_STOP},
                                        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
                                        {"no-bos", no_argument, 0, OPT_NO_BOS},
                                        {"class", required_argument, 0, OPT_CLASS},
                                        {"temp", required_argument, 0, OPT_TEMP},
                                        {"top-k", required_argument, 0, OPT_TOPK},
                                        {"top-p", required_argument, 0, OPT_TOPP},
                                        {"seed", required_argument, 0, OPT_SEED},
                                        {"help", no_argument, 0, 'h'}};
    enum { N_OWN = sizeof own / sizeof own[0] };
    struct option all[N_OWN + 32];
    cli_engine_merge_options(own, N_OWN, all, (int)(sizeof all / sizeof all[0]));
    int c;
    long v;
    double f;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "p:f:n:h" CLI_ENGINE_SHORT, all, NULL)) != -1) {
        int shared = cli_engine_option(c, optarg, &o->ep, PROG);
        if (shared < 0)
            return 2;
        if (shared > 0)
            continue;
        switch (c) {
        case 'p':
            o->prompt = optarg;
            break;
        case 'f':
            o->file = optarg;
            break;
        case 'n':
            if (cli_parse_int(PROG, "max-tokens", optarg, 1, 1 << 20, &v))
                return 2;
            o->req.max_tokens = (int32_t)v;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_PARALLEL:
            if (cli_parse_int(PROG, "parallel", optarg, 1, 65536, &v))
                return 2;
            o->parallel = (int)v;
            break;
        case OPT_STOP:
            if (o->n_stop == 16)
                return bad_usage("at most 16 --stop strings");
            o->stops[o->n_stop++] = optarg;
            break;
        case OPT_IGNORE_EOS:
            o->req.ignore_eos = true;
            break;
        case OPT_NO_BOS:
            o->add_bos = false;
            break;
        case OPT_CLASS:
            o->req.class_name = optarg;
            break;
        case OPT_TEMP:
            if (cli_parse_float(PROG, "temp", optarg, 0, 100, &f))
                return 2;
            o->req.sampling.temperature = (float)f;
            break;
        case OPT_TOPK:
            if (cli_parse_int(PROG, "top-k", optarg, 0, 1 << 24, &v))
                return 2;
            o->req.sampling.top_k = (int)v;
            break;
        case OPT_TOPP:
            if (cli_parse_float(PROG, "top-p", optarg, 1e-6, 1, &f))
                return 2;
            o->req.sampling.top_p = (float)f;
            break;
        case OPT_SEED:
            if (cli_parse_int(PROG, "seed", optarg, 0, __LONG_MAX__, &v))
                return 2;
            o->req.sampling.seed = (uint64_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, PROG ": unknown or incomplete option '%s'\n", argv[optind - 1]);
            return bad_usage("bad option");
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument (quote the prompt and pass it with -p)");
    if (!o->ep.target_path)
        return bad_usage("no model: pass -m MODEL.gguf");
    if (!o->prompt == !o->file)
        return bad_usage("give exactly one of -p PROMPT and -f FILE");
    if (o->ep.depth > o->ep.max_depth)
        o->ep.max_depth = o->ep.depth;
    return -1;
}

struct gen_run {
    engine *e;
    struct gen_opts *o;
    char **prompts;
    int n_prompts;
    uint64_t *ids;
    int next; // next prompt to add
    int done; // prompts printed
    uint64_t gen_tokens, drafted, accepted, steps;
    size_t streamed; // bytes of the single running request already printed
};

static void print_result(struct gen_run *r, int i, const struct engine_output *out) {
    if (r->o->json) {
        printf("{\"index\":%d,\"prompt\":", i);
        text_json_string(stdout, r->prompts[i], strlen(r->prompts[i]));
        printf(",\"prompt_tokens\":%d,\"completion_tokens\":%d,\"tokens\":[", out->n_prompt,
               out->n_tokens);
        for (int t = 0; t < out->n_tokens; t++)
            printf("%s%d", t ? "," : "", out->tokens[t]);
        printf("],\"text\":");
        text_json_string(stdout, out->text, out->text_len);
        printf(",\"finish_reason\":\"%s\",\"time_ms\":%.1f,\"ttft_ms\":%.1f,\"drafted\":%u,"
               "\"accepted\":%u,\"steps\":%u,\"cached_prompt_tokens\":%d}\n",
               engine_finish_name(out->finish), out->total_ms, out->ttft_ms, out->drafted,
               out->accepted, out->steps, out->cached_prompt_tokens);
    } else if (r->o->parallel > 1) {
        printf("%s%.*s\n\n", r->prompts[i], (int)out->text_len, out->text);
    } else {
        printf("%.*s\n", (int)(out->text_len - r->streamed), out->text + r->streamed);
    }
    fflush(stdout);
}

static int add_prompt(struct gen_run *r, char *err, size_t err_size) {
    const int i = r->next;
    const char *text = r->prompts[i];
    const tok *t = engine_tokenizer(r->e);
    int n = tok_encode(t, text, strlen(text), r->o->add_bos, false, NULL, 0);
    int32_t *toks = n > 0 ? malloc(sizeof *toks * (size_t)n) : NULL;
    if (!toks)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "prompt %d: cannot tokenize", i);
    tok_encode(t, text, strlen(text), r->o->add_bos, false, toks, n);
    struct engine_request req = r->o->req;
    req.prompt = toks;
    req.n_prompt = n;
    req.stop = r->o->stops;
    req.n_stop = r->o->n_stop;
    int rc = engine_add(r->e, &req, &r->ids[i], err, err_size);
    free(toks);
    if (!rc && !r->o->json && r->o->parallel <= 1) {
        printf("%s", text);
        fflush(stdout);
        r->streamed = 0;
    }
    r->next++;
    return rc;
}

// Prints what finished (in prompt order) and, for a single stream, the new text.
static void drain(struct gen_run *r) {
    struct engine_output out;
    if (!r->o->json && r->o->parallel <= 1 && r->done < r->next &&
        engine_get_output(r->e, r->ids[r->done], &out) == 0 && out.state != ENGINE_STATE_FINISHED) {
        fwrite(out.text + r->streamed, 1, out.text_len - r->streamed, stdout);
        fflush(stdout);
        r->streamed = out.text_len;
    }
    while (r->done < r->next && engine_get_output(r->e, r->ids[r->done], &out) == 0 &&
           out.state == ENGINE_STATE_FINISHED) {
        print_result(r, r->done, &out);
        r->gen_tokens += (uint64_t)out.n_tokens;
        r->drafted += out.drafted;
        r->accepted += out.accepted;
        engine_release(r->e, r->ids[r->done]);
        r->done++;
    }
}

static int run(struct gen_run *r) {
    char err[512];
    const int parallel = r->o->parallel > 0 ? r->o->parallel : 1;
    while (r->done < r->n_prompts) {
        while (r->next < r->n_prompts && r->next - r->done < parallel)
            if (add_prompt(r, err, sizeof err)) {
                fprintf(stderr, PROG ": %s\n", err);
                return 1;
            }
        int rc = engine_step(r->e, NULL);
        if (rc < 0) {
            fprintf(stderr, PROG ": engine step failed: %s\n", specd_status_name(rc));
            return 1;
        }
        r->steps++;
        drain(r);
    }
    return 0;
}

int main(int argc, char **argv) {
    struct gen_opts o = {.ep = engine_default_params(), .add_bos = true, .parallel = 1};
    o.req.max_tokens = 64;
    o.req.sampling = sampler_default_params();
    o.req.sampling.seed = 1;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    struct gen_run r = {.o = &o};
    if (o.file) {
        r.n_prompts = text_read_prompts(o.file, &r.prompts);
        if (r.n_prompts < 0) {
            fprintf(stderr, PROG ": cannot read prompt file %s\n", o.file);
            return 1;
        }
    } else {
        r.prompts = malloc(sizeof *r.prompts);
        r.prompts[0] = strdup(o.prompt);
        r.n_prompts = 1;
    }
    char err[512];
    if (engine_new(&o.ep, &r.e, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        text_free_lines(r.prompts, r.n_prompts);
        return 1;
    }
    r.ids = calloc((size_t)r.n_prompts + 1, sizeof *r.ids);
    const double t0 = clock_now_ms();
    rc = run(&r);
    const double secs = (clock_now_ms() - t0) / 1000.0;
    fprintf(stderr,
            "specd: %d prompts, %llu tokens in %.2f s (%.1f tokens/s), %llu steps, "
            "proposer %s, acceptance %.3f (%llu of %llu drafted)\n",
            r.done, (unsigned long long)r.gen_tokens, secs, secs > 0 ? r.gen_tokens / secs : 0.0,
            (unsigned long long)r.steps, engine_draft_name(r.e),
            r.drafted ? (double)r.accepted / (double)r.drafted : 0.0,
            (unsigned long long)r.accepted, (unsigned long long)r.drafted);
    free(r.ids);
    engine_free(r.e);
    text_free_lines(r.prompts, r.n_prompts);
    return rc;
}
