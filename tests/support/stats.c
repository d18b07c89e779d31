#include "tests/support/stats.h"

#include <math.h>

// Regularized upper incomplete gamma Q(a, x) (series / Lentz continued fraction), double.
double stats_gamma_q(double a, double x) {
    if (x <= 0.0)
        return 1.0;
    double log_front = -x + a * log(x) - lgamma(a);
    if (x < a + 1.0) {
        double ap = a, term = 1.0 / a, sum = term;
        for (int n = 0; n < 100000 && fabs(term) > fabs(sum) * 1e-16; n++) {
            ap += 1.0;
            term *= x / ap;
            sum += term;
        }
        return 1.0 - sum * exp(log_front);
    }
    double b = x + 1.0 - a, c = 1e300, d = 1.0 / b, h = d;
    for (int i = 1; i < 100000; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < 1e-300)
            d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300)
            c = 1e-300;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16)
            break;
    }
    return exp(log_front) * h;
}

// Pearson chi-square p-value of obs[0..cells) over n draws against prob[] (sum 1); cells with
// expected count < 5 are pooled. *impossible gets the draws in cells of probability 0.
double stats_chi2_pvalue(const long *obs, const double *prob, int cells, long n, long *impossible) {
    double stat = 0.0, pool_e = 0.0;
    long pool_o = 0;
    int used = 0;
    *impossible = 0;
    for (int i = 0; i < cells; i++) {
        double e = prob[i] * (double)n;
        if (prob[i] <= 0.0) {
            *impossible += obs[i];
        } else if (e < 5.0) {
            pool_e += e;
            pool_o += obs[i];
        } else {
            stat += (obs[i] - e) * (obs[i] - e) / e;
            used++;
        }
    }
    if (pool_e > 0.0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        used++;
    }
    return used > 1 ? stats_gamma_q(0.5 * (used - 1), 0.5 * stat) : 1.0;
}
