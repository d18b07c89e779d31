// Checks Prometheus text exposition (format 0.0.4) independently of any renderer, for tests.
#ifndef SPECD_TESTS_SUPPORT_PROM_TEXT_H
#define SPECD_TESTS_SUPPORT_PROM_TEXT_H

// Every line must be "# HELP name text", "# TYPE name counter|gauge|histogram|summary|untyped"
// or "name{label=\"value\",...} value" (value a number, NaN, +Inf or -Inf), each ending in \n;
// samples follow their family's TYPE line, a family's samples are contiguous and no family is
// declared twice. Returns 0, or the 1-based number of the first bad line.
int prom_text_check(const char *text);

// The value of the sample whose name and labels are exactly `series` (as rendered, e.g.
// "specd_depth{worker=\"w1\",class=\"*\"}"); NAN when absent or NaN.
double prom_text_value(const char *text, const char *series);

#endif
