// libFuzzer target for the GGUF reader: any bytes must either be rejected with a message or give
// a handle on which every accessor stays inside the buffer. Seeds: tests/fuzz/corpus/gguf/
// (written by `SPECD_GGUF_CORPUS_DIR=dir build/tests/test_gguf write_seed_corpus`).
#include "shared/status.h"
#include "worker/engine/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint64_t sink; // keeps the reads below from being optimised away

static void touch_key(const gguf_file *f, const char *key) {
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    struct gguf_str s;
    enum gguf_type et;
    uint64_t n;
    const void *raw;
    struct gguf_str *strs;
    float *fa;
    int32_t *ia;
    if (gguf_get_u32(f, key, &u32) == 0)
        sink += u32;
    if (gguf_get_i64(f, key, &i64) == 0)
        sink += (uint64_t)i64;
    if (gguf_get_f32(f, key, &f32) == 0)
        sink += f32 == f32;
    if (gguf_get_bool(f, key, &b) == 0)
        sink += b;
    if (gguf_get_str(f, key, &s) == 0 && s.len)
        sink += (uint8_t)s.data[0] + (uint8_t)s.data[s.len - 1];
    if (gguf_get_array(f, key, &et, &n, &raw) == 0 && n)
        sink += ((const uint8_t *)raw)[0] + et;
    if (gguf_get_str_array(f, key, &n, &strs) == 0) {
        for (uint64_t i = 0; i < n; i++)
            if (strs[i].len)
                sink += (uint8_t)strs[i].data[0] + (uint8_t)strs[i].data[strs[i].len - 1];
        free(strs);
    }
    if (gguf_get_f32_array(f, key, &n, &fa) == 0) {
        for (uint64_t i = 0; i < n; i++)
            sink += fa[i] == fa[i];
        free(fa);
    }
    if (gguf_get_i32_array(f, key, &n, &ia) == 0) {
        for (uint64_t i = 0; i < n; i++)
            sink += (uint32_t)ia[i];
        free(ia);
    }
}

static void touch_everything(const gguf_file *f) {
    sink += gguf_version(f) + gguf_alignment(f);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        struct gguf_str k = gguf_kv_key(f, i);
        char key[512];
        size_t n = k.len < sizeof key - 1 ? (size_t)k.len : sizeof key - 1;
        memcpy(key, k.data, n);
        key[n] = '\0';
        sink += (uint64_t)gguf_kv_type(f, i) + (uint64_t)gguf_find_key(f, key);
        touch_key(f, key);
    }
    touch_key(f, "general.alignment");
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(f, i);
        const uint8_t *d = t->data;
        if (t->n_bytes == 0 || t->n_dims < 1 || t->n_dims > 4 ||
            ggml_dtype_block_bytes(t->type) == 0)
            abort(); // the reader promised a valid, supported tensor
        sink += d[0] + d[t->n_bytes - 1] + t->name.len + strlen(ggml_dtype_name(t->type));
        char name[512];
        size_t n = t->name.len < sizeof name - 1 ? (size_t)t->name.len : sizeof name - 1;
        memcpy(name, t->name.data, n);
        name[n] = '\0';
        sink += gguf_find_tensor(f, name) != NULL;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256] = "";
    gguf_file *f = NULL;
    int rc = gguf_open_memory(data, size, NULL, &f, err, sizeof err);
    if (rc == SPECD_OK) {
        touch_everything(f);
        gguf_free(f);
    } else if (f != NULL || err[0] == '\0' ||
               (rc != SPECD_ERR_FORMAT && rc != SPECD_ERR_UNSUPPORTED)) {
        fprintf(stderr, "bad failure: %s, handle %p, message \"%s\"\n", specd_status_name(rc),
                (void *)f, err);
        abort();
    }
    return 0;
}
