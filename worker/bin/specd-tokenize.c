// specd-tokenize: encode text with a GGUF model's tokenizer, or decode ids.
//
//   specd-tokenize -m MODEL.gguf [--no-bos] [--no-parse-special] TEXT   prints ids
//   specd-tokenize -m MODEL.gguf --decode [--special] ID...            prints text
//
// Exit status: 0 success, 1 failure (bad model file, bad id), 2 bad usage.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/gguf.h"
#include "worker/engine/tok.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: specd-tokenize -m MODEL.gguf [--no-bos] [--no-parse-special] TEXT\n"
            "       specd-tokenize -m MODEL.gguf --decode [--special] ID...\n"
            "\n"
            "Encodes TEXT (\"-\" reads standard input) with the model's tokenizer and prints the\n"
            "token ids separated by spaces, or with --decode prints the text of the given ids.\n"
            "\n"
            "  -m, --model FILE     GGUF file holding the tokenizer (tokenizer.ggml.* metadata)\n"
            "  --no-bos             do not add BOS/EOS tokens the vocabulary asks for\n"
            "  --no-parse-special   match control-token texts such as <s> as plain text\n"
            "  --decode             the arguments are token ids; print their text\n"
            "  --special            with --decode, print control tokens as their text\n"
            "  -h, --help           show this help\n");
}

static int bad_usage(const char *msg, const char *arg) {
    fprintf(stderr, "specd-tokenize: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    usage(stderr);
    return 2;
}

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown)
            free(buf);
        buf = grown;
        cap *= 2;
    }
    *len = n;
    return buf;
}

static int encode(const tok *t, const char *text, size_t len, bool add_special,
                  bool parse_special) {
    int n = tok_encode(t, text, len, add_special, parse_special, NULL, 0);
    if (n < 0) {
        fprintf(stderr, "specd-tokenize: encoding failed: %s\n", specd_status_name(n));
        return 1;
    }
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids || tok_encode(t, text, len, add_special, parse_special, ids, n) != n) {
        fprintf(stderr, "specd-tokenize: out of memory\n");
        free(ids);
        return 1;
    }
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? " " : "", ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

static int decode(const tok *t, char **args, int n_args, bool special) {
    int32_t *ids = malloc(((size_t)n_args + 1) * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "specd-tokenize: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_args; i++) {
        char *end;
        errno = 0;
        long v = strtol(args[i], &end, 10);
        if (errno || end == args[i] || *end || v < 0 || v >= tok_n_vocab(t)) {
            fprintf(stderr, "specd-tokenize: bad token id '%s' (vocabulary has %d tokens)\n",
                    args[i], tok_n_vocab(t));
            free(ids);
            return 1;
        }
        ids[i] = (int32_t)v;
    }
    int64_t n = tok_decode(t, ids, n_args, false, special, NULL, 0);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text || tok_decode(t, ids, n_args, false, special, text, (size_t)n + 1) != n) {
        fprintf(stderr, "specd-tokenize: decoding failed\n");
        free(ids);
        free(text);
        return 1;
    }
    fwrite(text, 1, (size_t)n, stdout);
    printf("\n");
    free(ids);
    free(text);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    bool add_special = true, parse_special = true, do_decode = false, special = false;
    int first_arg = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc)
                return bad_usage("missing file after", a);
            model = argv[i];
        } else if (!strcmp(a, "--no-bos")) {
            add_special = false;
        } else if (!strcmp(a, "--no-parse-special")) {
            parse_special = false;
        } else if (!strcmp(a, "--decode")) {
            do_decode = true;
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "--")) {
            first_arg = i + 1;
            break;
        } else if (a[0] == '-' && a[1] != '\0' && !(do_decode && a[1] >= '0' && a[1] <= '9')) {
            return bad_usage("unknown option", a);
        } else {
            first_arg = i;
            break;
        }
    }
    int n_args = argc - first_arg;
    if (!model)
        return bad_usage("no model given (-m MODEL.gguf)", NULL);
    if (!do_decode && n_args != 1)
        return bad_usage(n_args ? "give the text as one argument" : "no text given", NULL);

    char err[512] = "";
    gguf_file *f = NULL;
    tok *t = NULL;
    int rc = gguf_open(model, NULL, &f, err, sizeof err);
    if (rc) {
        // The reader's message names the file already.
        fprintf(stderr, "specd-tokenize: %s\n", err);
        return 1;
    }
    rc = tok_new_from_gguf(f, &t, err, sizeof err);
    gguf_free(f);
    if (rc) {
        fprintf(stderr, "specd-tokenize: %s: %s\n", model, err);
        return 1;
    }
    int status;
    if (do_decode) {
        status = decode(t, argv + first_arg, n_args, special);
    } else if (!strcmp(argv[first_arg], "-")) {
        size_t len;
        char *text = read_stdin(&len);
        status = text ? encode(t, text, len, add_special, parse_special) : 1;
        free(text);
    } else {
        const char *text = argv[first_arg];
        status = encode(t, text, strlen(text), add_special, parse_special);
    }
    tok_free(t);
    return status;
}
