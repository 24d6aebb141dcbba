/* dropout.h -- the counter-based random numbers behind dropout masks.
 *
 * A mask element is a pure function of (key, row, unit), so a mask is the
 * same whichever thread draws it, however a minibatch is split, and the
 * backward pass draws it again instead of storing it.  key identifies the
 * fit, the epoch and the layer (fnn_drop_key); row is the sample's
 * position in the epoch's order; unit its column.  Mixing functions:
 * splitmix64's finalizer (Steele, Lea, Flood 2014) for the per-row state,
 * two rounds of the 32-bit "lowbias32" mixer (C. Wellons) per element,
 * integer operations that vectorize.  fastnn.reference.dropout_keep draws
 * the same bits with NumPy.
 */
#ifndef FASTNN_DROPOUT_H
#define FASTNN_DROPOUT_H

#include <stdint.h>

#define FNN_GOLDEN64 0x9e3779b97f4a7c15ULL
#define FNN_GOLDEN32 0x9e3779b9U

static inline uint64_t fnn_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline uint32_t fnn_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* The key of (seed, epoch, layer): splitmix64 steps, so nearby seeds,
 * epochs and layers give unrelated keys. */
static inline uint64_t fnn_drop_key(uint64_t seed, int64_t epoch, int64_t layer)
{
    uint64_t k = fnn_mix64(seed + (uint64_t)(epoch + 1) * FNN_GOLDEN64);
    return fnn_mix64(k + (uint64_t)(layer + 1) * FNN_GOLDEN64);
}

/* The per-row state of row `row` under key. */
static inline uint64_t fnn_drop_row(uint64_t key, int64_t row)
{
    return fnn_mix64(key + (uint64_t)(row + 1) * FNN_GOLDEN64);
}

/* The 32 random bits of unit j in the row with state r. */
static inline uint32_t fnn_drop_bits(uint64_t r, uint32_t j)
{
    return fnn_mix32(fnn_mix32((uint32_t)r ^ (j * FNN_GOLDEN32))
                     ^ (uint32_t)(r >> 32));
}

/* Units whose bits are below this are dropped: rate in [0, 1) as a
 * fraction of 2^32 (probability within 2^-32 of rate). */
static inline uint32_t fnn_drop_threshold(double rate)
{
    return (uint32_t)(rate * 4294967296.0);
}

#endif /* FASTNN_DROPOUT_H */
