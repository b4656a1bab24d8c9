/* The backward products of k-sparse SAE training (float32), loaded through ctypes by native.py.
 *
 * sparse_backward: one latent-major pass (entries sorted by a counting sort) giving the transposed sparse product
 * out[l] = sum over the entries (b, j) with idx[b, j] == l of w[b, j] * X[b] (as [L, D] or [D, L]), its column sums,
 * and, for a decoder, the latent gradient dots[b, j] = X[b] . Wd[idx[b, j]] from the same reads of X.
 * gather_dot: out[b, j] = dy[b] . W[idx[b, j]].  project_rows: g[l] -= (g[l] . w[l] / |w[l]|^2) w[l].
 * All arrays are C-contiguous unless a stride is passed. Return value: 0, or -1 for an index out of range.
 */
#include <stdint.h>
#include <string.h>

#define PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#define OMP(x) PRAGMA(omp x)
#else
#define THREAD_ID() 0
#define OMP(x)
#endif
#if defined(_OPENMP) || defined(SIMD_PRAGMAS)
#define SIMD _Pragma("omp simd")
#define SIMD_SUM(a) PRAGMA(omp simd reduction(+ : a))
#define SIMD_SUM2(a, b) PRAGMA(omp simd reduction(+ : a, b))
#else
#define SIMD
#define SIMD_SUM(a)
#define SIMD_SUM2(a, b)
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

#define CHUNK 16 /* latents per task; with a [D, L] output, a chunk's rows are written as 64-byte column runs */

/* One latent's entries (order[q0..q1), positions into idx) in increasing (b, j) order:
 * row[d] = sum_e w[e] X[b_e, d] (zero without entries), returns sum_e w[e]; if dots, dots[e] = X[b_e] . wrow. */
static float latent_pass(const int64_t *order, int64_t q0, int64_t q1, int64_t K, int64_t D, const float *w,
                         const float *X, int64_t xs, float *row, const float *wrow, float *dots) {
    float s = 0.0f;
    if (q0 == q1) {
        memset(row, 0, D * sizeof(float));
        return s;
    }
    for (int64_t q = q0; q < q1; q++) {
        const int64_t e = order[q];
        const float we = w[e];
        const float *xe = X + (e / K) * xs;
        if (q == q0) {
            SIMD for (int64_t d = 0; d < D; d++) row[d] = we * xe[d];
        } else {
            SIMD for (int64_t d = 0; d < D; d++) row[d] += we * xe[d];
        }
        if (dots) {
            float acc = 0.0f;
            SIMD_SUM(acc) for (int64_t d = 0; d < D; d++) acc += xe[d] * wrow[d];
            dots[e] = acc;
        }
        s += we;
    }
    return s;
}

/* The backward of the sparse products, latent-major. Entries e = (b, j) of idx [B, K] are sorted by latent with a
 * stable counting sort; then for each latent l, over its entries in increasing (b, j) order:
 *   out[l, :] = sum_e w[e] X[b_e, :]   (the transposed sparse product A^T X; out is [L, D], or [D, L] if out_t)
 *   colsum[l] = sum_e w[e]              (if colsum)
 *   dots[e]   = X[b_e, :] . Wd[l, :]    (if dots; Wd rows at stride wds; the latent gradient of a decoder)
 * Every element of out is written. X rows at stride xs. work: L + 1 + B*K int64, then n_threads*CHUNK*D floats. */
int sparse_backward(int64_t B, int64_t K, int64_t D, int64_t L, const int64_t *idx, const float *w,
                    const float *X, int64_t xs, float *out, int out_t, float *colsum, const float *Wd, int64_t wds,
                    float *dots, int64_t *work, int n_threads) {
    (void)n_threads; /* unused without OpenMP */
    int64_t *start = work, *order = work + L + 1;
    float *tmp_all = (float *)(work + L + 1 + B * K);
    const int64_t n = B * K;
    memset(start, 0, (L + 1) * sizeof(int64_t));
    for (int64_t e = 0; e < n; e++) {
        if (idx[e] < 0 || idx[e] >= L) return -1;
        start[idx[e] + 1]++;
    }
    for (int64_t l = 0; l < L; l++) start[l + 1] += start[l];
    for (int64_t e = 0; e < n; e++) order[start[idx[e]]++] = e; /* advances start[l] to start[l + 1] ... */
    for (int64_t l = L; l > 0; l--) start[l] = start[l - 1];    /* ... so shift it back */
    start[0] = 0;

    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    OMP(parallel for schedule(dynamic, 4) num_threads(n_threads))
    for (int64_t c = 0; c < n_chunks; c++) {
        const int64_t l0 = c * CHUNK, nl = min64(CHUNK, L - l0);
        float *tmp = tmp_all + (size_t)THREAD_ID() * CHUNK * D;
        for (int64_t t = 0; t < nl; t++) {
            const int64_t l = l0 + t;
            float *row = out_t ? tmp + t * D : out + l * D;
            const float s = latent_pass(order, start[l], start[l + 1], K, D, w, X, xs, row,
                                        dots ? Wd + l * wds : NULL, dots);
            if (colsum) colsum[l] = s;
        }
        if (out_t)
            for (int64_t d = 0; d < D; d++) {
                float *dst = out + d * L + l0;
                for (int64_t t = 0; t < nl; t++) dst[t] = tmp[t * D + d];
            }
    }
    return 0;
}

/* out [B, K]: dy [B, D] (row stride dys) dotted with rows idx of W [L, D] (row stride wsr). */
int gather_dot(int64_t B, int64_t K, int64_t D, int64_t L, const float *dy, int64_t dys, const int64_t *idx,
               const float *W, int64_t wsr, float *out, int n_threads) {
    (void)n_threads;
    int bad = 0;
    OMP(parallel for schedule(static) num_threads(n_threads) reduction(|| : bad))
    for (int64_t b = 0; b < B; b++) {
        const float *y = dy + b * dys;
        for (int64_t j = 0; j < K; j++) {
            const int64_t l = idx[b * K + j];
            if (l < 0 || l >= L) { bad = 1; out[b * K + j] = 0.0f; continue; }
            const float *wr = W + l * wsr;
            float acc = 0.0f;
            SIMD_SUM(acc) for (int64_t d = 0; d < D; d++) acc += y[d] * wr[d];
            out[b * K + j] = acc;
        }
    }
    return bad ? -1 : 0;
}

/* g[l] -= (g[l] . w[l]) / max(|w[l]|^2, tiny) * w[l] for each of the L rows (one pass over g and w). */
void project_rows(int64_t L, int64_t D, float *g, const float *w, float tiny, int n_threads) {
    (void)n_threads;
    OMP(parallel for schedule(static) num_threads(n_threads))
    for (int64_t l = 0; l < L; l++) {
        float *gr = g + l * D;
        const float *wr = w + l * D;
        float dot = 0.0f, nn = 0.0f;
        SIMD_SUM2(dot, nn) for (int64_t d = 0; d < D; d++) { dot += gr[d] * wr[d]; nn += wr[d] * wr[d]; }
        const float coef = dot / (nn > tiny ? nn : tiny);
        SIMD for (int64_t d = 0; d < D; d++) gr[d] -= coef * wr[d];
    }
}
