// Engine lifecycle, requests and their outputs, speculation settings.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "worker/engine/engine_internal.h"

struct engine_params engine_default_params(void) {
    struct engine_params p = {
        .proposer = ENGINE_PROPOSER_NONE,
        .ngram_max = 4,
        .ngram_min = 1,
        .backend = "cpu",
        .n_threads = 0,
        .block_size = 16,
        .kv_budget_bytes = 256ll << 20,
        .max_num_seqs = 64,
        .max_num_batched_tokens = 512,
        .max_depth = 8,
        .depth = 4,
        .prefix_caching = true,
    };
    return p;
}

const char *engine_state_name(enum engine_state s) {
    static const char *names[] = {"waiting", "running", "preempted", "finished"};
    return (unsigned)s < 4 ? names[s] : "?";
}

const char *engine_finish_name(enum engine_finish f) {
    static const char *names[] = {"none", "length", "eos", "stop", "context", "aborted", "error"};
    return (unsigned)f < 7 ? names[f] : "?";
}

static int32_t kv_stats_blocks(const kv_cache *kv);

// ---- construction ----------------------------------------------------------------------------

static int32_t budget_blocks(const engine *e, const llama_model *model) {
    if (e->params.kv_blocks > 0)
        return e->params.kv_blocks;
    const int32_t n = kv_blocks_for_budget((uint64_t)e->params.kv_budget_bytes,
                                           backend_cpu_block_bytes(model, e->params.block_size));
    return n > 0 ? n : 1;
}

// Loads a model with its backend and block manager. n_blocks <= 0: from the KV budget.
static int open_model(engine *e, struct eng_model *m, const char *path, int32_t n_blocks,
                      bool prefix_caching, char *err, size_t err_size) {
    int rc = llama_model_load(path, &m->model, err, err_size);
    if (rc)
        return rc;
    if (n_blocks <= 0)
        n_blocks = budget_blocks(e, m->model);
    if (strcmp(e->params.backend, "cpu") != 0)
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "backend '%s' is not built in (this build has: cpu)", e->params.backend);
    struct backend_params bp = backend_default_params();
    bp.n_blocks = n_blocks;
    bp.block_size = e->params.block_size;
    bp.n_threads = e->params.n_threads;
    if ((rc = backend_cpu_new(m->model, &bp, &m->be, err, err_size)))
        return rc;
    struct kv_params kp = kv_default_params();
    kp.block_size = e->params.block_size;
    kp.n_blocks = n_blocks;
    kp.max_seqs = e->params.max_num_seqs * 2 + 16; // waiting sequences may hold cached prefixes
    kp.prefix_caching = prefix_caching;
    if ((rc = kv_params_check(&kp, err, err_size)))
        return rc;
    m->kv = kv_new(&kp);
    return m->kv ? 0 : specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory for KV tables");
}

static void close_model(struct eng_model *m) {
    backend_free(m->be);
    kv_free(m->kv);
    llama_model_free(m->model);
}

static int check_params(const struct engine_params *p, char *err, size_t err_size) {
    if (!p->target_path)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "no target model given");
    if (p->proposer == ENGINE_PROPOSER_DRAFT && !p->draft_path)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "draft proposer needs a draft model");
    if (p->max_depth < 0 || p->max_depth > SPEC_MAX_DEPTH || p->depth < 0 ||
        p->depth > p->max_depth)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "depth %d must be within 0..max_depth (%d), max_depth within 0..%d",
                          p->depth, p->max_depth, SPEC_MAX_DEPTH);
    if (p->max_num_seqs < 1 || p->max_num_batched_tokens < p->max_depth + 1 || p->block_size < 1 ||
        p->ngram_min < 1 || p->ngram_max < p->ngram_min)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "bad limits: max_num_seqs >= 1, max_num_batched_tokens > max_depth, "
                          "block_size >= 1, 1 <= ngram_min <= ngram_max");
    return 0;
}

static int check_draft_vocab(engine *e, char *err, size_t err_size) {
    tok *dt = NULL;
    int rc = tok_new_from_gguf(llama_model_gguf(e->draft.model), &dt, err, err_size);
    if (rc)
        return rc;
    bool same = tok_n_vocab(dt) == tok_n_vocab(e->tokenizer);
    for (int32_t i = 0; same && i < tok_n_vocab(dt); i++) {
        size_t la, lb;
        const char *a = tok_token_text(dt, i, &la), *b = tok_token_text(e->tokenizer, i, &lb);
        same = la == lb && memcmp(a, b, la) == 0;
    }
    tok_free(dt);
    if (!same || llama_model_hparams(e->draft.model)->n_vocab != e->n_vocab)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "draft model's vocabulary differs from the target's: use a draft "
                          "trained with the target's tokenizer, or --ngram");
    return 0;
}

static int engine_init(engine *e, char *err, size_t err_size) {
    const struct engine_params *p = &e->params;
    int rc = open_model(e, &e->target, p->target_path, 0, p->prefix_caching, err, err_size);
    if (rc)
        return rc;
    const int32_t n_blocks = kv_stats_blocks(e->target.kv);
    if ((rc = tok_new_from_gguf(llama_model_gguf(e->target.model), &e->tokenizer, err, err_size)))
        return rc;
    const struct llama_hparams *hp = llama_model_hparams(e->target.model);
    e->n_vocab = hp->n_vocab;
    e->n_ctx = p->n_ctx > 0 && p->n_ctx < hp->n_ctx_train ? p->n_ctx : hp->n_ctx_train;
    snprintf(e->draft_name, sizeof e->draft_name, "none");
    if (p->proposer == ENGINE_PROPOSER_NGRAM)
        snprintf(e->draft_name, sizeof e->draft_name, "ngram");
    if (p->proposer == ENGINE_PROPOSER_DRAFT) {
        // Headroom over the target: drafts of every sequence are in flight at once.
        const int32_t extra =
            p->max_num_seqs * ((p->max_depth + p->block_size) / p->block_size + 1);
        if ((rc = open_model(e, &e->draft, p->draft_path, n_blocks + extra, p->prefix_caching, err,
                             err_size)) ||
            (rc = check_draft_vocab(e, err, err_size)))
            return rc;
        snprintf(e->draft_name, sizeof e->draft_name, "%s", llama_model_name(e->draft.model));
    }
    e->smp = sampler_new(e->n_vocab);
    e->pbuf = malloc(sizeof(float) * (size_t)e->n_vocab * (SPEC_MAX_DEPTH + 1));
    if (!e->smp || !e->pbuf)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    e->settings.enabled = p->proposer != ENGINE_PROPOSER_NONE && p->depth > 0;
    e->settings.depth = (uint32_t)p->depth;
    e->settings.min_depth = 0;
    e->settings.max_depth = (uint32_t)p->max_depth;
    snprintf(e->classes[0].name, sizeof e->classes[0].name, "default");
    e->n_classes = 1;
    return 0;
}

int engine_new(const struct engine_params *params, engine **out, char *err, size_t err_size) {
    *out = NULL;
    struct engine_params p = *params;
    if (p.proposer == ENGINE_PROPOSER_NONE && p.draft_path)
        p.proposer = ENGINE_PROPOSER_DRAFT;
    if (!p.backend)
        p.backend = "cpu";
    int rc = check_params(&p, err, err_size);
    if (rc)
        return rc;
    engine *e = calloc(1, sizeof *e);
    if (!e)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    e->params = p;
    e->next_id = 1;
    if ((rc = engine_init(e, err, err_size))) {
        engine_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

static void seq_free(struct eng_seq *s) {
    if (!s)
        return;
    tok_stream_free(s->detok);
    stop_free(s->stop);
    free(s->toks);
    free(s->text);
    free(s);
}

void engine_free(engine *e) {
    if (!e)
        return;
    for (int32_t i = 0; i < e->n_seqs; i++)
        seq_free(e->seqs[i]);
    free(e->seqs);
    close_model(&e->target);
    close_model(&e->draft);
    tok_free(e->tokenizer);
    sampler_free(e->smp);
    free(e->sched);
    free(e->batch.seqs);
    free(e->batch.tokens);
    free(e->batch.out_rows);
    free(e->batch.logits);
    free(e->qbuf);
    free(e->pbuf);
    free(e);
}

const tok *engine_tokenizer(const engine *e) {
    return e->tokenizer;
}
const char *engine_target_name(const engine *e) {
    return llama_model_name(e->target.model);
}
const char *engine_draft_name(const engine *e) {
    return e->draft_name;
}
int32_t engine_n_ctx(const engine *e) {
    return e->n_ctx;
}

// ---- requests --------------------------------------------------------------------------------

static int class_index(engine *e, const char *name) {
    if (!name || !*name)
        return ENGINE_DEFAULT_CLASS;
    for (int i = 0; i < e->n_classes; i++)
        if (strncmp(e->classes[i].name, name, SPEC_CLASS_NAME_LEN - 1) == 0)
            return i;
    if (e->n_classes == SPEC_MAX_CLASSES)
        return ENGINE_DEFAULT_CLASS; // table full: counted as default
    struct eng_class *c = &e->classes[e->n_classes];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    return e->n_classes++;
}

static int check_request(const engine *e, const struct engine_request *r, char *err,
                         size_t err_size) {
    if (r->n_prompt < 1 || !r->prompt)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "empty prompt");
    if (r->n_prompt + 1 > e->n_ctx)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "prompt of %d tokens does not fit the context of %d tokens", r->n_prompt,
                          e->n_ctx);
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab)
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "prompt token %d is outside the vocabulary", r->prompt[i]);
    if (r->max_tokens < 1)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "max_tokens must be >= 1");
    if (r->n_stop < 0 || (r->n_stop > 0 && !r->stop))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "bad stop list");
    const struct sampler_params *sp = &r->sampling;
    if (!(sp->temperature >= 0.0f && sp->temperature <= 100.0f) || sp->top_k < 0 ||
        !(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "sampling: temperature must be in [0, 100], top_k >= 0, "
                          "top_p in (0, 1]");
    return 0;
}

static int seq_init(engine *e, struct eng_seq *s, const struct engine_request *r) {
    s->cap_toks = r->n_prompt + 16;
    s->toks = malloc(sizeof(int32_t) * (size_t)s->cap_toks);
    s->detok = tok_stream_new(e->tokenizer, false);
    if (r->n_stop > 0)
        s->stop = stop_new(r->stop, r->n_stop);
    if (!s->toks || !s->detok || (r->n_stop > 0 && !s->stop))
        return SPECD_ERR_NOMEM;
    memcpy(s->toks, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    s->n_toks = s->n_prompt = r->n_prompt;
    s->max_tokens = r->max_tokens;
    s->ignore_eos = r->ignore_eos;
    s->sp = r->sampling;
    rng_seed(&s->rng, r->sampling.seed);
    s->kv = s->draft_kv = -1;
    s->user = r->user;
    s->priority = r->priority;
    s->cls = class_index(e, r->class_name);
    s->t_add_ms = clock_now_ms();
    return 0;
}

int engine_add(engine *e, const struct engine_request *req, uint64_t *id, char *err,
               size_t err_size) {
    int rc = check_request(e, req, err, err_size);
    if (rc)
        return rc;
    if (e->n_seqs == e->cap_seqs) {
        int32_t cap = e->cap_seqs ? 2 * e->cap_seqs : 64;
        struct eng_seq **grown = realloc(e->seqs, sizeof *grown * (size_t)cap);
        if (!grown)
            return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
        e->seqs = grown;
        e->cap_seqs = cap;
    }
    struct eng_seq *s = calloc(1, sizeof *s);
    if (!s || seq_init(e, s, req)) {
        seq_free(s);
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    }
    s->id = e->next_id++;
    s->arrival = e->next_arrival++;
    s->state = ENGINE_STATE_WAITING;
    e->seqs[e->n_seqs++] = s;
    *id = s->id;
    return 0;
}

static struct eng_seq *find_seq(const engine *e, uint64_t id) {
    for (int32_t i = 0; i < e->n_seqs; i++)
        if (e->seqs[i]->id == id)
            return e->seqs[i];
    return NULL;
}

bool engine_has_work(const engine *e) {
    return engine_n_unfinished(e) > 0;
}

int32_t engine_n_unfinished(const engine *e) {
    int32_t n = 0;
    for (int32_t i = 0; i < e->n_seqs; i++)
        n += e->seqs[i]->state != ENGINE_STATE_FINISHED;
    return n;
}

int engine_get_output(const engine *e, uint64_t id, struct engine_output *out) {
    const struct eng_seq *s = find_seq(e, id);
    if (!s)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    out->id = s->id;
    out->user = s->user;
    out->state = s->state;
    out->finish = s->finish;
    out->n_prompt = s->n_prompt;
    out->tokens = s->toks + s->n_prompt;
    out->n_tokens = s->n_toks - s->n_prompt;
    out->text = s->text ? s->text : "";
    out->text_len = s->text_len;
    out->drafted = s->drafted;
    out->accepted = s->accepted;
    out->steps = s->steps;
    out->preemptions = s->preemptions;
    out->cached_prompt_tokens = s->cached_prompt_tokens;
    const double now = clock_now_ms(), end = s->t_end_ms > 0 ? s->t_end_ms : now;
    out->queue_ms = (s->t_sched_ms > 0 ? s->t_sched_ms : now) - s->t_add_ms;
    out->ttft_ms = s->t_first_ms > 0 ? s->t_first_ms - s->t_add_ms : 0;
    out->total_ms = end - s->t_add_ms;
    return 0;
}

int engine_release(engine *e, uint64_t id) {
    for (int32_t i = 0; i < e->n_seqs; i++) {
        struct eng_seq *s = e->seqs[i];
        if (s->id != id)
            continue;
        if (s->state != ENGINE_STATE_FINISHED)
            return SPECD_ERR_STATE;
        seq_free(s);
        memmove(&e->seqs[i], &e->seqs[i + 1], sizeof *e->seqs * (size_t)(e->n_seqs - i - 1));
        e->n_seqs--;
        return 0;
    }
    return SPECD_ERR_INVALID;
}

int engine_abort(engine *e, uint64_t id) {
    struct eng_seq *s = find_seq(e, id);
    if (!s)
        return SPECD_ERR_INVALID;
    if (s->state != ENGINE_STATE_FINISHED)
        engine_finish_seq(e, s, ENGINE_FINISH_ABORTED);
    return 0;
}

int engine_finished_ids(const engine *e, uint64_t *ids, int cap) {
    int n = 0;
    for (int32_t i = 0; i < e->n_seqs && n < cap; i++)
        if (e->seqs[i]->state == ENGINE_STATE_FINISHED)
            ids[n++] = e->seqs[i]->id;
    return n;
}

// ---- speculation settings --------------------------------------------------------------------

void engine_apply_settings(engine *e, const struct spec_settings *s) {
    e->settings = *s;
    if (e->settings.max_depth > (uint32_t)e->params.max_depth)
        e->settings.max_depth = (uint32_t)e->params.max_depth;
    if (e->settings.min_depth > e->settings.max_depth)
        e->settings.min_depth = e->settings.max_depth;
    for (int i = 0; i < e->n_classes; i++)
        e->classes[i].has_override = false;
    for (uint32_t i = 0; i < s->n_classes && i < SPEC_MAX_CLASSES; i++) {
        char name[SPEC_CLASS_NAME_LEN];
        snprintf(name, sizeof name, "%s", s->classes[i].name);
        struct eng_class *c = &e->classes[class_index(e, name)];
        c->has_override = true;
        c->enabled = s->classes[i].enabled;
        c->depth = (int32_t)s->classes[i].depth;
    }
}

void engine_get_settings(const engine *e, struct spec_settings *out) {
    *out = e->settings;
    out->n_classes = 0;
    for (int i = 0; i < e->n_classes; i++) {
        if (!e->classes[i].has_override)
            continue;
        struct spec_class_setting *c = &out->classes[out->n_classes++];
        memcpy(c->name, e->classes[i].name, sizeof c->name);
        c->enabled = e->classes[i].enabled;
        c->depth = (uint32_t)e->classes[i].depth;
    }
}

int engine_set_class_depth(engine *e, const char *class_name, int32_t depth) {
    if (depth < 0 || depth > e->params.max_depth)
        return SPECD_ERR_INVALID;
    struct eng_class *c = &e->classes[class_index(e, class_name)];
    c->has_override = true;
    c->enabled = depth > 0;
    c->depth = depth;
    return 0;
}

static int32_t kv_stats_blocks(const kv_cache *kv) {
    struct kv_stats st;
    kv_stats(kv, &st);
    return st.n_blocks;
}

void engine_kv_usage(const engine *e, int32_t *used_blocks, int32_t *total_blocks) {
    struct kv_stats st;
    kv_stats(e->target.kv, &st);
    *used_blocks = st.n_used;
    *total_blocks = st.n_blocks;
}
