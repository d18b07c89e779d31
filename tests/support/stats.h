// Statistics for tests: chi-square goodness of fit in double precision.
#ifndef SPECD_TESTS_STATS_H
#define SPECD_TESTS_STATS_H

// Regularized upper incomplete gamma function Q(a, x).
double stats_gamma_q(double a, double x);

// Pearson chi-square p-value of observed counts obs[0..cells) over n draws against prob[]
// (summing to 1). Cells with expected count < 5 are pooled; *impossible receives the draws that
// fell in cells of probability 0 (any such draw is itself proof of a wrong distribution).
double stats_chi2_pvalue(const long *obs, const double *prob, int cells, long n, long *impossible);

#endif
