// The controller policy (controller/ctl_policy.h) as JSON, for PUT/GET /v1/policy, the copy
// persisted in Redis and the `policy:` section of the YAML config (converted to JSON first).
//
// The JSON object has one member per struct ctl_policy field, with the same names ("mode" is a
// string: "goodput", "threshold" or "static"; depths and *_ms are integers; thresholds,
// min_drafted and hysteresis_margin are numbers), plus "overrides": an array of
//   {"name": "<class>", "mode": ..., "min_depth": N, "max_depth": N, "static_depth": N}.
// Parsing is a patch: members that are absent keep the value they have in the policy passed in.
// "overrides", when present, replaces the whole list; an override's absent members come from
// the (patched) global mode and depths. Depths a document leaves out are fitted into the bounds
// it sets (min_depth lowered to max_depth, a non-zero static_depth clamped into
// [max(min_depth, 1), max_depth]), so {"max_depth": 3} alone is a valid patch. Unknown or
// duplicate members are errors, so a typo never passes silently. docs/controller.md documents
// every field.
#ifndef SPECD_CONTROLLER_CTLSVC_POLICY_JSON_H
#define SPECD_CONTROLLER_CTLSVC_POLICY_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "controller/ctl_policy.h"

// Applies the JSON document text[0..len) to *policy and validates the result with
// ctl_policy_validate(). Returns SPECD_OK (*policy updated); SPECD_ERR_FORMAT (not a JSON
// object, trailing bytes, a member of the wrong type, an unknown or duplicate member);
// SPECD_ERR_INVALID (a value out of range or inconsistent with another); SPECD_ERR_NOMEM. On
// failure *policy is unchanged, `field` names the offending member (e.g. "low_threshold",
// "overrides[1].max_depth"; "" when the document as a whole is bad) and `reason` says why in
// one line. field/reason may be NULL.
int ctlsvc_policy_from_json(const char *text, size_t len, struct ctl_policy *policy, char *field,
                            size_t field_size, char *reason, size_t reason_size);
// The same for an already parsed cJSON value (borrowed).
int ctlsvc_policy_from_cjson(const cJSON *json, struct ctl_policy *policy, char *field,
                             size_t field_size, char *reason, size_t reason_size);

// A new cJSON object holding every field of `policy` (caller owns it; cJSON_Delete), or NULL
// when out of memory.
cJSON *ctlsvc_policy_to_cjson(const struct ctl_policy *policy);
// The same printed compactly: a malloc'ed NUL-terminated string (caller frees), or NULL.
char *ctlsvc_policy_to_json(const struct ctl_policy *policy);

#endif
