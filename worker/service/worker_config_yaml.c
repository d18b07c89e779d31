// Worker configuration: the YAML file reader (libyaml document API).
//
// The document is a mapping. A scalar value sets the key of that name; a mapping value is a group
// whose keys are joined to the group name with '_' (`redis: {port: 1}` sets redis_port). An empty
// file or an empty document sets nothing. Sequences, aliases to non-scalars and non-scalar keys
// are errors.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "shared/status.h"
#include "worker/service/worker_config.h"

#define GROUP_DEPTH_MAX 4

static int node_fail(char *err, size_t err_size, const char *path, const yaml_node_t *node,
                     const char *what) {
    return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s:%zu: %s", path,
                      node ? node->start_mark.line + 1 : 0, what);
}

static int load_mapping(struct worker_config *c, yaml_document_t *doc, yaml_node_t *map,
                        const char *prefix, int depth, const char *path, char *err,
                        size_t err_size) {
    if (depth > GROUP_DEPTH_MAX)
        return node_fail(err, err_size, path, map, "groups nested too deeply");
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(doc, pair->value);
        if (!k || k->type != YAML_SCALAR_NODE)
            return node_fail(err, err_size, path, k, "keys must be plain names");
        char key[128];
        int n = snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "_" : "",
                         (const char *)k->data.scalar.value);
        if (n < 0 || (size_t)n >= sizeof key)
            return node_fail(err, err_size, path, k, "key too long");
        if (!v)
            return node_fail(err, err_size, path, k, "missing value");
        if (v->type == YAML_MAPPING_NODE) {
            int rc = load_mapping(c, doc, v, key, depth + 1, path, err, err_size);
            if (rc != SPECD_OK)
                return rc;
            continue;
        }
        if (v->type != YAML_SCALAR_NODE) {
            char what[200];
            snprintf(what, sizeof what, "%s: lists are not supported here", key);
            return node_fail(err, err_size, path, v, what);
        }
        const char *value = (const char *)v->data.scalar.value;
        // A plain `~` or `null` means an empty value (e.g. `draft: ~`).
        if (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (strcmp(value, "~") == 0 || strcmp(value, "null") == 0))
            value = "";
        char why[300];
        if (worker_config_set(c, key, value, why, sizeof why) != SPECD_OK)
            return node_fail(err, err_size, path, k, why);
    }
    return SPECD_OK;
}

int worker_config_load_yaml(struct worker_config *c, const char *path, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return specd_fail(err, err_size, SPECD_ERR_IO, "cannot open config file %s: %s", path,
                          strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory reading %s", path);
    }
    yaml_parser_set_input_file(&parser, f);
    int rc = SPECD_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s:%zu: %s", path,
                        parser.problem_mark.line + 1,
                        parser.problem ? parser.problem : "YAML syntax error");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE)
        rc = load_mapping(c, &doc, root, "", 0, path, err, err_size);
    else if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
        rc = node_fail(err, err_size, path, root, "the document must be a mapping of keys");
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
