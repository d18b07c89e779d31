// Job fields: parsing and validation of one generation request, as carried by a Redis stream
// entry (see docs/protocol.md, "Redis job queues"). Pure code: no Redis, no I/O.
//
// A job arrives as a list of field/value byte strings (the stream entry). job_parse() checks every
// field and fills a `struct job`, or says precisely why the job is malformed. job_encode() is the
// inverse used by producers; job_fields_to_json() renders raw fields for the dead-letter stream.
//
//   struct job_params jp = job_default_params();
//   struct job job;
//   char why[JOB_REASON_MAX];
//   if (job_parse(&jp, fields, n, &job, why, sizeof why) == SPECD_ERR_FORMAT) dead_letter(why);
//   ... use job ...
//   job_clear(&job);
#ifndef SPECD_SHARED_JOB_H
#define SPECD_SHARED_JOB_H

#include <stddef.h>
#include <stdint.h>

#define JOB_VERSION 1      // the `v` field our producers write; absent means 1
#define JOB_ID_MAX 128     // job ids: 1..128 bytes of [A-Za-z0-9._:-]
#define JOB_CLASS_MAX 64   // class labels: 1..64 bytes of [A-Za-z0-9._:-]
#define JOB_REASON_MAX 256 // a buffer this size holds any job_parse() reason untruncated
#define JOB_FIELDS_MAX 12  // most fields job_encode() writes

// One field of a stream entry. Bytes, not C strings: values may hold any byte, including NUL.
struct job_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

enum job_priority { JOB_PRIORITY_NORMAL = 0, JOB_PRIORITY_HIGH = 1 };

// Limits and defaults applied by job_parse(). Fields absent from a job take the defaults.
struct job_params {
    int max_tokens_limit;       // max_tokens must be in 1..max_tokens_limit (4096)
    size_t prompt_max_bytes;    // prompt length limit in bytes (1 MiB)
    int stop_max;               // most stop strings (16)
    size_t stop_max_bytes;      // longest stop string in bytes (256)
    int reject_unknown;         // 1: an unknown field makes the job malformed; 0: ignored (0)
    int default_max_tokens;     // 256 (capped at max_tokens_limit)
    double default_temperature; // 1.0
    double default_top_p;       // 1.0
    int default_top_k;          // 0 (top-k off)
};

// A validated job. Strings point into storage owned by the job when job_parse() filled it
// (release with job_clear()); a producer may instead fill a job by hand after job_init() with
// pointers it owns, and then need not call job_clear() (it frees only job_parse() storage).
struct job {
    int version;             // JOB_VERSION
    char id[JOB_ID_MAX + 1]; // NUL-terminated, validated charset
    const char *prompt;      // prompt_len bytes, NUL-terminated, may contain NUL bytes
    size_t prompt_len;       // 1..prompt_max_bytes
    int max_tokens;          // 1..max_tokens_limit
    double temperature;      // [0, 10]; 0 means greedy
    double top_p;            // (0, 1]
    int top_k;               // >= 0; 0 means off
    int has_seed;            // 1 when `seed` was given
    uint64_t seed;           // valid when has_seed
    const char *const *stop; // [n_stop] NUL-terminated, non-empty, no NUL inside
    int n_stop;
    int stream;                          // 1: the worker streams text deltas
    char class_label[JOB_CLASS_MAX + 1]; // "" when absent
    enum job_priority priority;
    void *storage; // owned by job_parse(); NULL for hand-filled jobs
};

struct job_params job_default_params(void);

// Sets every field of `job` to the defaults of `params` (NULL: job_default_params()): empty id,
// empty prompt, no seed, no stop strings, stream 0, no class, normal priority, storage NULL.
void job_init(struct job *job, const struct job_params *params);

// Parses and validates `n_fields` fields into `out` (params NULL: defaults).
// Returns SPECD_OK; SPECD_ERR_FORMAT when the job is malformed, with a one-line reason in `err`
// naming the field and the rule, e.g. "field 'top_p': 1.5 is outside (0, 1]"; SPECD_ERR_NOMEM;
// SPECD_ERR_INVALID for NULL arguments. On failure `out` holds no storage (job_clear() is safe).
// Field names are case-sensitive; a known field given twice is malformed.
int job_parse(const struct job_params *params, const struct job_field *fields, size_t n_fields,
              struct job *out, char *err, size_t err_size);

// Frees what job_parse() allocated and leaves `job` as after job_init(NULL). NULL-safe.
void job_clear(struct job *job);

// Finds the only field named `name`. Returns 1 and sets *value/*value_len when exactly one field
// has that name, else 0. Used to salvage the id and stream flag of a malformed job.
int job_find_field(const struct job_field *fields, size_t n_fields, const char *name,
                   const char **value, size_t *value_len);

// 1 when `id` (len bytes) is a valid job id, else 0.
int job_id_is_valid(const char *id, size_t len);

// Fields of a job as a producer writes them (`v 1` first). The field array points into `job`
// and into the encoding's own storage: keep both alive while using it, then job_encoded_clear().
struct job_encoded {
    struct job_field fields[JOB_FIELDS_MAX];
    size_t n_fields;
    char numbers[8][32]; // formatted numbers
    char *stop_json;     // owned, NULL when there are no stop strings
};

// Encodes `job` (not validated here: parse the result to validate). Numbers are written in the
// shortest form that reads back to the same value. Returns SPECD_OK or SPECD_ERR_NOMEM;
// SPECD_ERR_INVALID for NULL arguments or a negative n_stop.
int job_encode(const struct job *job, struct job_encoded *out);
void job_encoded_clear(struct job_encoded *enc);

// Renders fields as a JSON object {"name": "value", ...} in their order (a repeated name is
// repeated). Bytes that are not valid UTF-8 are written as \u00XX (their Latin-1 reading), so the
// output is always valid JSON. Returns a malloc'ed NUL-terminated string (caller frees) or NULL
// when out of memory.
char *job_fields_to_json(const struct job_field *fields, size_t n_fields);

#endif
