// Seeded pseudo-random generator: xoshiro256** (Blackman and Vigna) seeded through splitmix64.
//
// The state is a plain struct that the caller owns: one per request (or per test), never a global,
// so that every run can be reproduced from its seed. Not cryptographic.
#ifndef SPECD_ENGINE_RNG_H
#define SPECD_ENGINE_RNG_H

#include <stdint.h>

struct rng_state {
    uint64_t s[4]; // xoshiro256** state; never all zero once seeded
};

// Seeds the state from one 64-bit value: the four words are four successive splitmix64 outputs
// of `seed`. Every seed (0 included) gives a valid state.
void rng_seed(struct rng_state *rng, uint64_t seed);

// Next 64 random bits (xoshiro256** output), advancing the state.
uint64_t rng_next_u64(struct rng_state *rng);

// Uniform double in [0, 1) with 53 random bits: (next_u64 >> 11) * 2^-53. Takes one draw.
double rng_uniform(struct rng_state *rng);

// One splitmix64 step: advances *x by the golden gamma and returns the mixed value. Exposed for
// deriving independent seeds (for example one per sequence from a request seed) and for tests.
uint64_t rng_splitmix64(uint64_t *x);

#endif
