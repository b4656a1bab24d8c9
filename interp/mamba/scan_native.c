/* Fused CPU selective scans for Mamba-1 and Mamba-2 (float32), loaded through ctypes by native.py.
 *
 * Same recurrence as the plain references in scan.py (selective_scan_ref, ssd_scan_ref):
 *     h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t,    y_t = C_t . h_t + D x_t
 * One pass over the positions per (batch row, channel block / head), the state kept in cache, optional writes of
 * every state straight into the caller's [b, T, ...] buffer. All arrays are C-contiguous float32.
 *
 * Decays are exponentiated as 2^(dt * A * log2 e) with the caller passing A2 = A * log2(e) (A <= 0, so the exponent is
 * <= 0): fast_exp2 below (Cephes' exp2f polynomial on [-1/2, 1/2], relative error ~2e-7; 0 below 2^-126).
 * Mamba-1 is vectorised by the compiler; Mamba-2's rows use AVX-512 or AVX2 intrinsics where the build has them.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#define PARALLEL_FOR _Pragma("omp parallel for collapse(2) schedule(static) num_threads(n_threads)")
#else
#define PARALLEL_FOR
#endif

#if defined(_OPENMP) || defined(SIMD_PRAGMAS)
#define SIMD _Pragma("omp simd")
#else
#define SIMD
#endif

static inline float fast_exp2(float x) {
    x = x < -127.0f ? -127.0f : x; /* 2^-127 and below: the exponent field becomes 0, i.e. the result is 0 */
    x = x > 127.0f ? 127.0f : x;   /* only a patched, negative dt gets here: saturate instead of wrapping around */
    /* round to nearest by the 1.5 * 2^23 trick (|x| <= 127 here): plain adds, so the loop vectorizes without
       -ffast-math (rintf and fmaxf did not, and ran ~8x slower) */
    const float i = (x + 12582912.0f) - 12582912.0f;
    const float f = x - i; /* [-1/2, 1/2] */
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)i + 127) << 23; /* i >= -127: the biased exponent is >= 0 */
    return p * u.f;
}

#define BLOCK 64 /* Mamba-1 channels per task, the vector axis: a BLOCK x N state stays in L1 */

#if defined(__AVX512F__)
/* out[j] = column j of the 16 x 16 block whose row i starts at src + i * stride (rows: state index n, columns:
 * channels), stored at dst + 16 j: unpack pairs of rows, then 64-bit, then 128-bit lane shuffles. */
static inline void transpose16(const float *src, int64_t stride, float *dst) {
    __m512 r[16], u[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * stride);
    for (int g = 0; g < 16; g += 4) {
        const __m512 t0 = _mm512_unpacklo_ps(r[g], r[g + 1]), t1 = _mm512_unpackhi_ps(r[g], r[g + 1]);
        const __m512 t2 = _mm512_unpacklo_ps(r[g + 2], r[g + 3]), t3 = _mm512_unpackhi_ps(r[g + 2], r[g + 3]);
        u[g] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)); /* lane k: column 4k of rows g..g+3 */
        u[g + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        u[g + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
        u[g + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int m = 0; m < 4; m++) { /* u[4 g + m], lane k: column 4k + m of rows 4g..4g+3 */
        const __m512 a = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), b = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
        const __m512 c = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        const __m512 e = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
        _mm512_storeu_ps(dst + 16 * m, _mm512_shuffle_f32x4(a, c, 0x88));
        _mm512_storeu_ps(dst + 16 * (8 + m), _mm512_shuffle_f32x4(a, c, 0xdd));
        _mm512_storeu_ps(dst + 16 * (4 + m), _mm512_shuffle_f32x4(b, e, 0x88));
        _mm512_storeu_ps(dst + 16 * (12 + m), _mm512_shuffle_f32x4(b, e, 0xdd));
    }
}
#endif

/* The state h [N, BLOCK] of channels c0..c0+w-1 written out as dst [w, N] (the caller's [.., d, N] layout). */
static inline void store_states(const float *h, int64_t N, int64_t w, float *dst) {
#if defined(__AVX512F__)
    if (N == 16) { /* Mamba-1's usual d_state: whole 16 x 16 tiles */
        int64_t c = 0;
        for (; c + 16 <= w; c += 16) transpose16(h + c, BLOCK, dst + c * 16);
        for (; c < w; c++)
            for (int64_t n = 0; n < 16; n++) dst[c * 16 + n] = h[n * BLOCK + c];
        return;
    }
#endif
    for (int64_t c = 0; c < w; c++)
        for (int64_t n = 0; n < N; n++) dst[c * N + n] = h[n * BLOCK + c];
}

/* BLOCK, for the caller sizing mamba1_scan's scratch. */
int mamba1_block(void) { return BLOCK; }

/* Mamba-1: x, dt [b, T, d]; A2T [N, d] (A * log2 e, transposed); B, C [b, T, N]; Dv [d]; h0 [b, d, N] or NULL;
 * work: zeroed scratch of b * ceil(d / BLOCK) * 2 * N * BLOCK floats (no allocation in here).
 * Writes y [b, T, d], final [b, d, N] and, if not NULL, states [b, T, d, N].
 * Vectorised over channels (the state is kept as [N, BLOCK]), so y needs no horizontal sums; the state is
 * transposed to [channel, N] only when written out. */
void mamba1_scan(int64_t nb, int64_t T, int64_t d, int64_t N, const float *x, const float *dt, const float *A2T,
                 const float *B, const float *C, const float *Dv, const float *h0, float *y, float *final,
                 float *states, float *work, int n_threads) {
    const int64_t n_blocks = (d + BLOCK - 1) / BLOCK;
    (void)n_threads;
    PARALLEL_FOR
    for (int64_t r = 0; r < nb; r++) {
        for (int64_t blk = 0; blk < n_blocks; blk++) {
            const int64_t c0 = blk * BLOCK, w = c0 + BLOCK < d ? BLOCK : d - c0;
            float *h = work + (r * n_blocks + blk) * 2 * N * BLOCK; /* state [N, BLOCK], then the A2T block */
            float *a = h + N * BLOCK;
            float acc[BLOCK], u[BLOCK], dtb[BLOCK];
            for (int64_t n = 0; n < N; n++) {
                memcpy(a + n * BLOCK, A2T + n * d + c0, sizeof(float) * (size_t)w); /* padding channels stay 0 */
                if (h0)
                    for (int64_t c = 0; c < w; c++) h[n * BLOCK + c] = h0[(r * d + c0 + c) * N + n];
            }
            for (int64_t c = w; c < BLOCK; c++) dtb[c] = u[c] = 0.0f;
            for (int64_t t = 0; t < T; t++) {
                const int64_t row = r * T + t;
                const float *xt = x + row * d + c0, *dtt = dt + row * d + c0;
                for (int64_t c = 0; c < w; c++) {
                    dtb[c] = dtt[c];
                    u[c] = dtt[c] * xt[c];
                }
                SIMD
                for (int64_t c = 0; c < BLOCK; c++) acc[c] = 0.0f;
                for (int64_t n = 0; n < N; n++) {
                    const float bn = B[row * N + n], cn = C[row * N + n];
                    const float *an = a + n * BLOCK;
                    float *hn = h + n * BLOCK;
                    SIMD
                    for (int64_t c = 0; c < BLOCK; c++) {
                        const float v = fast_exp2(dtb[c] * an[c]) * hn[c] + u[c] * bn;
                        hn[c] = v;
                        acc[c] += v * cn;
                    }
                }
                for (int64_t c = 0; c < w; c++) y[row * d + c0 + c] = acc[c] + Dv[c0 + c] * xt[c];
                if (states) store_states(h, N, w, states + (row * d + c0) * N);
            }
            for (int64_t c = 0; c < w; c++)
                for (int64_t n = 0; n < N; n++) final[(r * d + c0 + c) * N + n] = h[n * BLOCK + c];
        }
    }
}

/* One Mamba-2 state row: h[n] = decay h[n] + u B[n] (also written to st, if not NULL); returns sum_n h[n] C[n].
 * Explicit vectors: a compiler's vectorised reduction here summed the lanes through memory, one at a time (~7x
 * slower than this whole row). */
static inline float ssd_row(int64_t N, float decay, float u, float *restrict h, const float *restrict Bt,
                            const float *restrict Ct, float *restrict st) {
    int64_t n = 0;
    float acc = 0.0f;
#if defined(__AVX512F__)
    const __m512 vd = _mm512_set1_ps(decay), vu = _mm512_set1_ps(u);
    __m512 va = _mm512_setzero_ps();
    for (; n + 16 <= N; n += 16) {
        const __m512 v = _mm512_fmadd_ps(vd, _mm512_loadu_ps(h + n), _mm512_mul_ps(vu, _mm512_loadu_ps(Bt + n)));
        _mm512_storeu_ps(h + n, v);
        if (st) _mm512_storeu_ps(st + n, v);
        va = _mm512_fmadd_ps(v, _mm512_loadu_ps(Ct + n), va);
    }
    acc = _mm512_reduce_add_ps(va);
#elif defined(__AVX2__) && defined(__FMA__)
    const __m256 vd = _mm256_set1_ps(decay), vu = _mm256_set1_ps(u);
    __m256 va = _mm256_setzero_ps();
    for (; n + 8 <= N; n += 8) {
        const __m256 v = _mm256_fmadd_ps(vd, _mm256_loadu_ps(h + n), _mm256_mul_ps(vu, _mm256_loadu_ps(Bt + n)));
        _mm256_storeu_ps(h + n, v);
        if (st) _mm256_storeu_ps(st + n, v);
        va = _mm256_fmadd_ps(v, _mm256_loadu_ps(Ct + n), va);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(va), _mm256_extractf128_ps(va, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    acc = _mm_cvtss_f32(s4);
#endif
    for (; n < N; n++) {
        const float v = decay * h[n] + u * Bt[n];
        h[n] = v;
        if (st) st[n] = v;
        acc += v * Ct[n];
    }
    return acc;
}

/* Mamba-2: x [b, T, H, P]; dt [b, T, H]; A2, Dv [H]; B, C [b, T, G, N] (head h reads group h / (H / G));
 * h0 [b, H, P, N] or NULL. Writes y [b, T, H, P], final [b, H, P, N] (the running state lives there) and, if not
 * NULL, states [b, T, H, P, N]. */
void mamba2_scan(int64_t nb, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const float *x,
                 const float *dt, const float *A2, const float *B, const float *C, const float *Dv, const float *h0,
                 float *y, float *final, float *states, int n_threads) {
    const int64_t per_group = H / G, size = P * N;
    (void)n_threads;
    PARALLEL_FOR
    for (int64_t r = 0; r < nb; r++) {
        for (int64_t hd = 0; hd < H; hd++) {
            const int64_t g = hd / per_group;
            float *h = final + (r * H + hd) * size; /* the running state [P, N], in cache */
            if (h0) memcpy(h, h0 + (r * H + hd) * size, sizeof(float) * (size_t)size);
            else memset(h, 0, sizeof(float) * (size_t)size);
            for (int64_t t = 0; t < T; t++) {
                const int64_t row = r * T + t;
                const float dtv = dt[row * H + hd], decay = fast_exp2(dtv * A2[hd]);
                const float *Bt = B + (row * G + g) * N, *Ct = C + (row * G + g) * N;
                const float *xt = x + (row * H + hd) * P;
                float *st = states ? states + (row * H + hd) * size : NULL;
                for (int64_t p = 0; p < P; p++) {
                    const float acc = ssd_row(N, decay, dtv * xt[p], h + p * N, Bt, Ct, st ? st + p * N : NULL);
                    y[(row * H + hd) * P + p] = acc + Dv[hd] * xt[p];
                }
            }
        }
    }
}
