/* Fused CPU kernels for k-sparse SAE training (float32), loaded through ctypes by native.py.
 *
 * topk_encode: per row b of xc [B, D], the k largest entries of pre[b] = xc[b] @ W + b_enc (W [D, L]) and, if asked,
 * the k_aux largest among the "dead" latents, WITHOUT writing the dense [B, L] pre-activations: the rows are cut
 * into tiles of R, the latents into blocks of BC; each thread computes one R x BC block of pre at a time into its
 * own buffer (which stays in cache) with the BLAS of the process (torch's MKL; its function pointers come from the
 * caller), then offers the block's entries to a running per-row selection (a k-entry min-heap whose root is the
 * entry to beat; a vector compare against the root skips almost every entry). Ties: among equal values the lower
 * latent index wins; NaN counts as larger than any number (as torch.topk). Each row's selection is returned
 * sorted best first. Equivalent to ``torch.addmm(b_enc, xc, W).topk(k)`` up to how ties are broken.
 *
 * With n_sel > 0 the same runs BatchTopK's selection instead: the n_sel largest entries of the whole [B, L] matrix
 * (per-thread candidate pools, merged at the end), ties to the lower flat index b * L + l.
 *
 * BLAS, two modes: MKL's packed API (cblas_sgemm_pack / cblas_sgemm_compute: xc's tiles and W's blocks are packed
 * once per call, so the inner products run without re-packing a panel per block), or the standard Fortran sgemm_
 * (any BLAS). Both are called from inside this file's OpenMP threads, with MKL's thread count set to 1 there.
 * The backward products live in sparse_backward.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#define PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#define OMP(x) PRAGMA(omp x)
#else
#define THREAD_ID() 0
#define OMP(x)
#endif

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *, const int *);
typedef size_t (*pack_size_fn)(int, int, int, int);
typedef void (*pack_fn)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_fn)(int, int, int, int, int, int, const float *, int, const float *, int, float, float *, int);
typedef int (*threads_local_fn)(int);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, A_MATRIX = 161, B_MATRIX = 162 };

/* ------------------------------------------------------------------------------------------- selection */
/* a beats b: larger value, NaN above everything, lower index among equals */
static inline int beats(float av, int64_t ai, float bv, int64_t bi) {
    const int an = av != av, bn = bv != bv;
    if (an || bn) return an && (!bn || ai < bi);
    return av > bv || (av == bv && ai < bi);
}

/* Per-row selection: an entry is one uint64, (order key of the value) << 32 | (2^32 - 1 - latent), so that a larger
 * integer is a better entry (larger value; lower latent among equal values) and the heap compares one integer. The
 * order key maps floats monotonically to uint32, -0 to +0's key (they are equal values) and every NaN above +inf. */
static inline uint64_t entry_key(float x, int64_t latent) {
    uint32_t u;
    if (x != x) {
        u = 0xFFFFFFFFu;
    } else {
        if (x == 0.0f) x = 0.0f; /* -0 -> +0 */
        memcpy(&u, &x, sizeof u);
        u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    }
    return ((uint64_t)u << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)latent);
}

static inline float entry_value(uint64_t e) {
    const uint32_t key = (uint32_t)(e >> 32);
    if (key == 0xFFFFFFFFu) return NAN;
    const uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline int64_t entry_latent(uint64_t e) { return (int64_t)(0xFFFFFFFFu - (uint32_t)e); }

/* min-heap: h[0] is the worst entry kept, the one to beat */
static void sift_min(uint64_t *h, int64_t n, int64_t p) {
    const uint64_t x = h[p];
    for (;;) {
        int64_t c = 2 * p + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= x) break;
        h[p] = h[c];
        p = c;
    }
    h[p] = x;
}

/* Offer entry e to the selection of capacity k holding *n entries. */
static inline void offer(uint64_t *h, int64_t k, int64_t *n, uint64_t e) {
    if (*n < k) {
        h[(*n)++] = e;
        if (*n == k)
            for (int64_t p = k / 2 - 1; p >= 0; p--) sift_min(h, k, p);
    } else if (e > h[0]) {
        h[0] = e;
        sift_min(h, k, 0);
    }
}

/* Best first into vals / idx (heap sort: the root, the worst left, goes to the end). */
static void emit_selection(uint64_t *h, int64_t k, float *vals, int64_t *idx) {
    for (int64_t end = k - 1; end > 0; end--) {
        const uint64_t t = h[0];
        h[0] = h[end];
        h[end] = t;
        sift_min(h, end, 0);
    }
    for (int64_t j = 0; j < k; j++) {
        vals[j] = entry_value(h[j]);
        idx[j] = entry_latent(h[j]);
    }
}

/* The value an entry must exceed to enter a full selection ("not <=" is also true for NaN). A later entry equal
 * to the root never beats it (higher latent index), so the strict test loses nothing. */
static inline float bar_value(const uint64_t *h) { return entry_value(h[0]); }

/* Offer a row of len entries (latents c0 .. c0+len-1, increasing). */
static void scan_row(const float *row, int64_t len, int64_t c0, uint64_t *h, int64_t k, int64_t *n) {
    int64_t j = 0;
    for (; j < len && *n < k; j++) offer(h, k, n, entry_key(row[j], c0 + j));
    if (j == len) return;
#if defined(__AVX512F__)
    __m512 bar = _mm512_set1_ps(bar_value(h));
    for (; j + 16 <= len; j += 16) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), bar, _CMP_NLE_UQ);
        if (!m) continue;
        while (m) {
            const int t = __builtin_ctz(m);
            m &= m - 1;
            offer(h, k, n, entry_key(row[j + t], c0 + j + t));
        }
        bar = _mm512_set1_ps(bar_value(h));
    }
#elif defined(__AVX2__)
    __m256 bar = _mm256_set1_ps(bar_value(h));
    for (; j + 8 <= len; j += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + j), bar, _CMP_NLE_UQ));
        if (!m) continue;
        while (m) {
            const int t = __builtin_ctz(m);
            m &= m - 1;
            offer(h, k, n, entry_key(row[j + t], c0 + j + t));
        }
        bar = _mm256_set1_ps(bar_value(h));
    }
#endif
    float bv = bar_value(h);
    for (; j < len; j++)
        if (!(row[j] <= bv)) {
            offer(h, k, n, entry_key(row[j], c0 + j));
            bv = bar_value(h);
        }
}

/* Batch-wide selection (BatchTopK): each thread appends the entries that beat its threshold to an unordered pool
 * of capacity 2 n; a full pool keeps its n best (quickselect) and their worst becomes the threshold, so every entry
 * costs O(1) amortised. Entries are keyed by (value, flat index b * L + l): lower flat index wins among equals. */
static inline void swap_entry(float *v, int64_t *ix, int64_t a, int64_t b) {
    const float tv = v[a]; v[a] = v[b]; v[b] = tv;
    const int64_t ti = ix[a]; ix[a] = ix[b]; ix[b] = ti;
}

/* Reorder so that entry nth is the (nth+1)-th best, every entry before it beats it and it beats every entry after
 * (keys are distinct: the indices are). Iterative quickselect, median-of-three pivot. */
static void select_best(float *v, int64_t *ix, int64_t n, int64_t nth) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (beats(v[mid], ix[mid], v[lo], ix[lo])) swap_entry(v, ix, lo, mid);
        if (beats(v[hi], ix[hi], v[lo], ix[lo])) swap_entry(v, ix, lo, hi);
        if (beats(v[hi], ix[hi], v[mid], ix[mid])) swap_entry(v, ix, mid, hi);
        const float pv = v[mid];
        const int64_t pi = ix[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (beats(v[i], ix[i], pv, pi)) i++;
            while (beats(pv, pi, v[j], ix[j])) j--;
            if (i <= j) swap_entry(v, ix, i++, j--);
        }
        if (nth <= j) hi = j;
        else if (nth >= i) lo = i;
        else return;
    }
}

typedef struct {
    float *v;
    int64_t *ix;
    int64_t n, keep, cap; /* cap = 2 keep */
    int full;             /* the pool has been cut to its best `keep` at least once: (tv, ti) is the bar */
    float tv;
    int64_t ti;
} pool_t;

static void pool_offer(pool_t *p, float x, int64_t fi) {
    if (p->full && !beats(x, fi, p->tv, p->ti)) return;
    p->v[p->n] = x;
    p->ix[p->n] = fi;
    if (++p->n < p->cap) return;
    select_best(p->v, p->ix, p->n, p->keep - 1);
    p->n = p->keep;
    p->full = 1;
    p->tv = p->v[p->keep - 1];
    p->ti = p->ix[p->keep - 1];
}

/* Offer a row of the block (flat indices f0 .. f0+len-1); only entries not below the bar are looked at. */
static void pool_scan(pool_t *p, const float *row, int64_t len, int64_t f0) {
    int64_t j = 0;
#if defined(__AVX512F__)
    while (j + 16 <= len) {
        const __m512 bar = _mm512_set1_ps(p->full ? p->tv : -INFINITY);
        __mmask16 m = p->full ? _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), bar, _CMP_NLT_UQ) : 0xFFFF;
        while (m) {
            const int t = __builtin_ctz(m);
            m &= m - 1;
            pool_offer(p, row[j + t], f0 + j + t);
        }
        j += 16;
    }
#endif
    for (; j < len; j++)
        if (!p->full || !(row[j] < p->tv)) pool_offer(p, row[j], f0 + j);
}

/* Sort n (index, value) pairs by index: insertion sort for short runs, heap sort otherwise. */
static void sift_index(int64_t *ix, float *v, int64_t n, int64_t p) {
    for (;;) {
        int64_t c = 2 * p + 1, w = p;
        if (c < n && ix[c] > ix[w]) w = c;
        if (c + 1 < n && ix[c + 1] > ix[w]) w = c + 1;
        if (w == p) return;
        swap_entry(v, ix, p, w);
        p = w;
    }
}

static void sort_by_index(int64_t *ix, float *v, int64_t n) {
    if (n <= 32) {
        for (int64_t a = 1; a < n; a++)
            for (int64_t b = a; b > 0 && ix[b - 1] > ix[b]; b--) swap_entry(v, ix, b - 1, b);
        return;
    }
    for (int64_t p = n / 2 - 1; p >= 0; p--) sift_index(ix, v, n, p);
    for (int64_t end = n - 1; end > 0; end--) {
        swap_entry(v, ix, 0, end);
        sift_index(ix, v, end, 0);
    }
}

/* After the scan: the threads' pools (counts stored after their entries) hold every candidate; keep the n_sel best
 * of their union and write them to vals/idx in increasing flat index (a counting sort by row, then each row). */
static void merge_pools(int64_t B, int64_t L, int64_t n_sel, float *pv, int64_t *pi, int n_threads, float *vals,
                        int64_t *idx) {
    const int64_t *pool_n = pi + (size_t)n_threads * 2 * n_sel;
    int64_t *row_start = pi + (size_t)n_threads * 2 * n_sel + n_threads;
    int64_t total = 0;
    for (int t = 0; t < n_threads; t++) {
        memmove(pv + total, pv + (size_t)t * 2 * n_sel, pool_n[t] * sizeof(float));
        memmove(pi + total, pi + (size_t)t * 2 * n_sel, pool_n[t] * sizeof(int64_t));
        total += pool_n[t];
    }
    if (total > n_sel) select_best(pv, pi, total, n_sel - 1);
    memset(row_start, 0, (B + 1) * sizeof(int64_t));
    for (int64_t q = 0; q < n_sel; q++) row_start[pi[q] / L + 1]++;
    for (int64_t b = 0; b < B; b++) row_start[b + 1] += row_start[b];
    for (int64_t q = 0; q < n_sel; q++) {
        const int64_t pos = row_start[pi[q] / L]++;
        idx[pos] = pi[q];
        vals[pos] = pv[q];
    }
    for (int64_t b = B; b > 0; b--) row_start[b] = row_start[b - 1];
    row_start[0] = 0;
    for (int64_t b = 0; b < B; b++)
        sort_by_index(idx + row_start[b], vals + row_start[b], row_start[b + 1] - row_start[b]);
}

/* ------------------------------------------------------------------------------------------- encoder */
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

typedef struct {
    size_t c_buf, heaps, a_pack, b_pack, pool_v, pool_i, total; /* byte offsets of each part in the workspace */
} layout_t;

/* Workspace: per thread an R x BC block buffer and 2R row counters; with MKL's packed API, every packed row tile
 * of xc and every packed block of W. Offsets of packed parts are computed the same way here and in topk_encode. */
static layout_t workspace_layout(int64_t B, int64_t D, int64_t L, int64_t R, int64_t BC, int n_threads,
                                 pack_size_fn psize, int64_t k, int64_t k_aux, int64_t n_sel) {
    layout_t lay;
    size_t off = 0;
    lay.c_buf = off;
    off += round64((size_t)n_threads * R * BC * sizeof(float));
    lay.heaps = off; /* per thread: R row selections of k entries, R of k_aux, then 2R counts */
    off += round64((size_t)n_threads * R * (k + k_aux + 2) * sizeof(uint64_t));
    lay.a_pack = off;
    if (psize) {
        for (int64_t r0 = 0; r0 < B; r0 += R)
            off += round64(psize(A_MATRIX, (int)min64(R, B - r0), (int)BC, (int)D));
    }
    lay.b_pack = off;
    if (psize) {
        for (int64_t c0 = 0; c0 < L; c0 += BC)
            off += round64(psize(B_MATRIX, (int)R, (int)min64(BC, L - c0), (int)D));
    }
    /* batch-wide selection: one pool of 2 n_sel entries per thread (values, then flat indices) */
    lay.pool_v = off;
    off += round64((size_t)n_threads * 2 * n_sel * sizeof(float));
    lay.pool_i = off;
    off += round64((size_t)n_threads * 2 * n_sel * sizeof(int64_t) +
                   (n_sel ? (size_t)(n_threads + B + 1) * sizeof(int64_t) : 0)); /* + pool counts, row starts */
    lay.total = off;
    return lay;
}

int64_t topk_encode_workspace(int64_t B, int64_t D, int64_t L, int64_t R, int64_t BC, int n_threads,
                              void *pack_size, int64_t k, int64_t k_aux, int64_t n_sel) {
    return (int64_t)workspace_layout(B, D, L, R, BC, n_threads, (pack_size_fn)pack_size, k, k_aux, n_sel).total;
}

/* xc [B, D] contiguous; W [D, L] with strides (ws0, ws1), one of them 1; b_enc [L].
 * Per-row selection (n_sel 0): vals/idx [B, k], each row best first.
 * Batch-wide selection (n_sel > 0, k ignored): the n_sel best entries of the whole [B, L] matrix into
 * vals/idx [n_sel] as values and flat indices b * L + l, in increasing flat index.
 * dead: sorted latent indices (n_dead of them), aux_vals/aux_idx [B, k_aux] per row (k_aux 0: none).
 * blas: sgemm (Fortran) is used when pack/compute are NULL. Returns -1 for bad dead indices. */
int topk_encode(int64_t B, int64_t D, int64_t L, const float *xc, const float *W, int64_t ws0, int64_t ws1,
                const float *b_enc, int64_t k, int64_t n_sel, float *vals, int64_t *idx, const int64_t *dead,
                int64_t n_dead, int64_t k_aux, float *aux_vals, int64_t *aux_idx, int64_t R, int64_t BC,
                char *work, void *sgemm_p, void *pack_size_p, void *pack_p, void *compute_p, void *threads_local_p,
                int n_threads) {
    const sgemm_fn sgemm = (sgemm_fn)sgemm_p;
    const pack_size_fn psize = (pack_size_fn)pack_size_p;
    const pack_fn pack = (pack_fn)pack_p;
    const compute_fn compute = (compute_fn)compute_p;
    const threads_local_fn threads_local = (threads_local_fn)threads_local_p;
    const int packed = psize && pack && compute;
    const int w_trans = ws1 != 1; /* W stored latent-major: W[d, l] at W[l * ws1] */
    const layout_t lay = workspace_layout(B, D, L, R, BC, n_threads, packed ? psize : NULL, k, k_aux, n_sel);
    const int64_t n_tiles = (B + R - 1) / R, n_blocks = (L + BC - 1) / BC;
    /* every packed tile / block but the last has the full size; offsets are multiples of these */
    const size_t a_full = packed ? round64(psize(A_MATRIX, (int)R, (int)BC, (int)D)) : 0;
    const size_t b_full = packed ? round64(psize(B_MATRIX, (int)R, (int)BC, (int)D)) : 0;
    for (int64_t i = 0; i < n_dead; i++)
        if (dead[i] < 0 || dead[i] >= L || (i && dead[i] <= dead[i - 1])) return -1;

    OMP(parallel num_threads(n_threads))
    {
        const int old_threads = threads_local ? threads_local(1) : 0; /* MKL: one thread inside ours */
        const int tid = THREAD_ID();
        float *buf = (float *)(work + lay.c_buf) + (size_t)tid * R * BC;
        uint64_t *heaps = (uint64_t *)(work + lay.heaps) + (size_t)tid * R * (k + k_aux + 2);
        uint64_t *aux_heaps = heaps + R * k;
        int64_t *cnt = (int64_t *)(aux_heaps + R * k_aux), *aux_cnt = cnt + R;
        pool_t pool = {(float *)(work + lay.pool_v) + (size_t)tid * 2 * n_sel,
                       (int64_t *)(work + lay.pool_i) + (size_t)tid * 2 * n_sel, 0, n_sel, 2 * n_sel, 0, 0.0f, 0};
        if (packed) {
            OMP(for schedule(static) nowait)
            for (int64_t t = 0; t < n_tiles; t++) {
                const size_t off = lay.a_pack + t * a_full;
                const int rows = (int)min64(R, B - t * R);
                pack(ROW_MAJOR, A_MATRIX, NO_TRANS, rows, (int)BC, (int)D, 1.0f, xc + t * R * D, (int)D,
                     (float *)(work + off));
            }
            OMP(for schedule(static))
            for (int64_t c = 0; c < n_blocks; c++) {
                const size_t off = lay.b_pack + c * b_full;
                const int cols = (int)min64(BC, L - c * BC);
                if (w_trans)
                    pack(ROW_MAJOR, B_MATRIX, TRANS, (int)R, cols, (int)D, 1.0f, W + c * BC * ws1, (int)ws1,
                         (float *)(work + off));
                else
                    pack(ROW_MAJOR, B_MATRIX, NO_TRANS, (int)R, cols, (int)D, 1.0f, W + c * BC, (int)ws0,
                         (float *)(work + off));
            }
        }
        OMP(for schedule(static))
        for (int64_t t = 0; t < n_tiles; t++) {
            const int64_t r0 = t * R, rows = min64(R, B - r0);
            memset(cnt, 0, 2 * R * sizeof(int64_t));
            const size_t a_off = lay.a_pack + t * a_full;
            int64_t d_lo = 0;
            for (int64_t c = 0; c < n_blocks; c++) {
                const int64_t c0 = c * BC, cols = min64(BC, L - c0);
                for (int64_t r = 0; r < rows; r++) memcpy(buf + r * cols, b_enc + c0, cols * sizeof(float));
                const float one = 1.0f;
                if (packed) {
                    compute(ROW_MAJOR, PACKED, PACKED, (int)rows, (int)cols, (int)D, (const float *)(work + a_off),
                            (int)D, (const float *)(work + lay.b_pack + c * b_full), (int)cols, 1.0f, buf,
                            (int)cols);
                } else { /* column-major view: buf^T [cols, rows] = W_block^T [cols, D] @ xc_tile^T [D, rows] */
                    const int m = (int)cols, n = (int)rows, kk = (int)D, ldb = (int)D, ldc = (int)cols;
                    if (w_trans) {
                        const int lda = (int)ws1;
                        sgemm("T", "N", &m, &n, &kk, &one, W + c0 * ws1, &lda, xc + r0 * D, &ldb, &one, buf, &ldc);
                    } else {
                        const int lda = (int)ws0;
                        sgemm("N", "N", &m, &n, &kk, &one, W + c0, &lda, xc + r0 * D, &ldb, &one, buf, &ldc);
                    }
                }
                if (n_sel)
                    for (int64_t r = 0; r < rows; r++) pool_scan(&pool, buf + r * cols, cols, (r0 + r) * L + c0);
                else
                    for (int64_t r = 0; r < rows; r++)
                        scan_row(buf + r * cols, cols, c0, heaps + r * k, k, &cnt[r]);
                if (k_aux) {
                    int64_t d_hi = d_lo;
                    while (d_hi < n_dead && dead[d_hi] < c0 + cols) d_hi++;
                    for (int64_t r = 0; r < rows; r++) {
                        uint64_t *h = aux_heaps + r * k_aux;
                        const float *row = buf + r * cols - c0;
                        for (int64_t q = d_lo; q < d_hi; q++)
                            offer(h, k_aux, &aux_cnt[r], entry_key(row[dead[q]], dead[q]));
                    }
                    d_lo = d_hi;
                }
            }
            for (int64_t r = 0; r < rows; r++) {
                if (!n_sel) emit_selection(heaps + r * k, k, vals + (r0 + r) * k, idx + (r0 + r) * k);
                if (k_aux)
                    emit_selection(aux_heaps + r * k_aux, k_aux, aux_vals + (r0 + r) * k_aux, aux_idx + (r0 + r) * k_aux);
            }
        }
        if (n_sel) ((int64_t *)(work + lay.pool_i))[(size_t)n_threads * 2 * n_sel + tid] = pool.n;
        if (threads_local) threads_local(old_threads);
    }
    if (n_sel) merge_pools(B, L, n_sel, (float *)(work + lay.pool_v), (int64_t *)(work + lay.pool_i), n_threads,
                           vals, idx);
    return 0;
}
