/* fuzz_abi.c: a structure-aware libFuzzer target over every function of include/performer.h.
 *
 * The input bytes are a program: a dtype (float32 or float64; one program in four float16 or
 * bfloat16, which softmax, linear attention, FAVOR+, their state calls, the decoders and the
 * merge take with float32 lse/states, and the projections' W may have), then up
 * to 8 calls. Each call picks
 * a function, its sizes (small, zero, negative or huge), and for every tensor argument its
 * presence, shape (sometimes off by one axis), dtype, reserved field, strides (contiguous,
 * padded, permuted, reversed, broadcast, huge, random) and placement (its own allocation, an
 * exact copy of an earlier tensor's view, or inside an earlier tensor's buffer), then option
 * structs (size current, older, or bad; kv_lengths / kv_starts of fuzzed contents) and handles
 * (live, destroyed, of another kind, garbage).
 *
 * Every tensor whose byte span is representable gets a buffer of exactly that span, so ASan
 * reports any access outside it; a span that overflows 64 bits (which the header says must be
 * PERFORMER_ERROR_SIZE_OVERFLOW) points into a PROT_NONE page. Per-batch arrays and option
 * structs of an older size are allocated to exactly their documented extent.
 *
 * Oracle, after every call: a status in 0..9; on error a message of at most 511 bytes that
 * names an argument, and not one byte changed in any buffer; on success nothing changed outside
 * the output views, and finite outputs from finite moderate inputs (where the header promises
 * them); a call whose arguments the header says must fail does fail; handles do not leak.
 * A violation aborts (libFuzzer records the input). */
#define _GNU_SOURCE
#include "performer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CAP_ELEMENTS (1 << 16) /* larger representable tensors: the input is skipped */
#define MAX_TENSORS 16
#define MAX_CALLS 8
#define CANARY 0x7F /* outputs are filled with it: 0x7F7F7F7F is a finite float */

static void describe_call(void);
static void fail(const char *what, const char *fn) {
    fprintf(stderr, "fuzz_abi: %s in %s (status message: \"%s\")\n", what, fn, performer_last_error());
    describe_call();
    abort();
}

/* ------------------------------------------------------------------ input bytes */

typedef struct { const uint8_t *p; size_t n; } Src;
static uint8_t u8(Src *s) {
    if (s->n == 0) return 0;
    s->n--;
    return *s->p++;
}
static int chance(Src *s, int one_in) { return u8(s) % one_in == 0; }

static const int64_t huge_values[] = {-1, INT64_C(1) << 31, INT64_C(1) << 40, INT64_C(1) << 58,
                                      INT64_C(1) << 62, INT64_MAX, (INT64_C(1) << 32) + 1, INT64_C(1) << 20};
/* A size: mostly small, sometimes 0, negative or huge. */
static int64_t dim(Src *s) {
    static const int64_t small[] = {1, 2, 3, 1, 2, 4, 0, 5};
    uint8_t b = u8(s);
    return b < 232 ? small[b % 8] : huge_values[b % 8];
}

/* ------------------------------------------------------------------ buffers and tensors */

typedef struct {
    performer_tensor_t t;
    const char *templ;
    int output;      /* the call may write its view */
    int may_neg_inf; /* -inf is a documented output value (lse, c) */
    int buffer;      /* index into buffers, or -1 (unbacked or empty) */
    int guaranteed;  /* the header says this tensor makes the call fail */
} Tensor;

typedef struct {
    unsigned char *base, *snapshot, *written; /* written: bytes covered by an output view */
    size_t bytes;
} Buffer;

static unsigned char *guard_page; /* PROT_NONE: any access faults */

typedef struct {
    Src *src;
    int dtype;
    int64_t B, H, Hk, N, L, D, M, C, Hs, F; /* F: rows of W */
    Tensor tensors[MAX_TENSORS];
    int ntensors;
    Buffer buffers[MAX_TENSORS + 4];
    int nbuffers;
    int guaranteed_failure; /* the header says the call must fail */
    int numerics_unknown;   /* no finiteness promise for this call's outputs */
    int skip;               /* a representable tensor too big to allocate: skip the call */
    int takes_half;         /* the function accepts float16 / bfloat16 tokens */
    int any_dtype;          /* the tensors may have any of the four dtypes (a projection's W) */
    int ignores;            /* IGNORES_EPS, IGNORES_KV: option fields the function does not read */
    void *extra[8];         /* option structs and per-batch arrays, freed after the call */
    int nextra;
    const int64_t *per_batch[2]; /* kv_lengths, kv_starts as passed, judged once the tensors exist */
    int64_t per_batch_count[2];
    int nper_batch;
} Call;

/* Products of fuzzed sizes wrap (two's complement) instead of being undefined. */
static int64_t mulw(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* Half types (2, 3) are taken by the calls that set takes_half (softmax, linear, FAVOR+, the
 * state calls, the feature maps, the decoders, the merge) or any_dtype (a projection's W);
 * every other function must refuse them
 * (PERFORMER_ERROR_DTYPE_MISMATCH). */
static int valid_dtype(int dtype) { return dtype >= PERFORMER_FLOAT32 && dtype <= PERFORMER_BFLOAT16; }
static int is_half(int dtype) { return dtype == PERFORMER_FLOAT16 || dtype == PERFORMER_BFLOAT16; }
static size_t esize(int dtype) { return dtype == PERFORMER_FLOAT64 ? 8 : is_half(dtype) ? 2 : 4; }

/* float -> IEEE binary16, rounded to nearest even (overflow: inf; NaN stays NaN). */
static uint16_t to_float16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    int exp = (int)((bits >> 23) & 0xFF);
    uint32_t mant = bits & 0x7FFFFF;
    if (exp == 255) return sign | 0x7C00 | (mant ? 0x200 : 0);
    int e = exp - 127 + 15;
    if (e >= 31) return sign | 0x7C00;
    if (e <= 0) { /* subnormal or zero */
        if (e < -10) return sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* a carry into the exponent is right */
    return sign | (uint16_t)half;
}

static double from_float16(uint16_t h) {
    int exp = (h >> 10) & 0x1F;
    double mant = h & 0x3FF, v;
    if (exp == 0) v = ldexp(mant, -24);
    else if (exp == 31) v = mant != 0 ? NAN : INFINITY;
    else v = ldexp(mant + 1024, exp - 25);
    return (h & 0x8000) ? -v : v;
}

/* float -> bfloat16 (the top 16 bits), rounded to nearest even; NaN stays NaN. */
static uint16_t to_bfloat16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if (isnan(f)) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

static double from_bfloat16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element access in any dtype (unknown codes are read and written as float32). */
static void store_value(int dtype, unsigned char *p, double v) {
    if (dtype == PERFORMER_FLOAT64) { memcpy(p, &v, 8); return; }
    float f = (float)v;
    if (is_half(dtype)) {
        uint16_t h = dtype == PERFORMER_FLOAT16 ? to_float16(f) : to_bfloat16(f);
        memcpy(p, &h, 2);
    } else {
        memcpy(p, &f, 4);
    }
}

static double load_value(int dtype, const unsigned char *p) {
    if (dtype == PERFORMER_FLOAT64) { double d; memcpy(&d, p, 8); return d; }
    if (is_half(dtype)) {
        uint16_t h;
        memcpy(&h, p, 2);
        return dtype == PERFORMER_FLOAT16 ? from_float16(h) : from_bfloat16(h);
    }
    float f;
    memcpy(&f, p, 4);
    return f;
}

static int64_t template_dim(Call *c, char ch) {
    switch (ch) {
    case 'B': return c->B; case 'H': return c->H; case 'K': return c->Hk; case 'N': return c->N;
    case 'L': return c->L; case 'D': return c->D; case 'M': return c->M; case 'C': return c->C;
    case 'S': return c->Hs; case 'F': return c->F; default: return 1;
    }
}

static int add_buffer(Call *c, size_t bytes) {
    Buffer *b = &c->buffers[c->nbuffers];
    b->bytes = bytes;
    b->base = malloc(bytes ? bytes : 1);
    b->snapshot = malloc(bytes ? bytes : 1);
    b->written = calloc(1, bytes ? bytes : 1);
    return c->nbuffers++;
}

/* Moderate values: multiples of 1/8 in [-2, 2]. */
static double moderate(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (double)((int)(*state >> 24) % 33 - 16) / 8.0;
}

/* Offsets (in elements) of the lowest and highest element of a non-empty view. */
static void extent(const performer_tensor_t *t, __int128 *lo, __int128 *hi) {
    *lo = 0; *hi = 0;
    for (int i = 0; i < 4; i++) {
        __int128 term = (__int128)(t->shape[i] - 1) * t->strides[i]; /* |term| < 2^126: no overflow */
        const __int128 limit = (__int128)1 << 100; /* saturated: the sums below cannot overflow */
        if (term > limit) term = limit;
        if (term < -limit) term = -limit;
        if (term < 0) *lo += term; else *hi += term;
    }
}

static Call *current; /* for describe_call */

/* The tensors of the failing call, to read the report without a debugger. */
static void describe_call(void) {
    if (!current) return;
    for (int i = 0; i < current->ntensors; i++) {
        const Tensor *x = &current->tensors[i];
        const performer_tensor_t *t = &x->t;
        fprintf(stderr, "  tensor %d %s%s dtype %d reserved %d data %p shape [%lld %lld %lld %lld] strides [%lld %lld %lld %lld]%s\n",
                i, x->templ, x->output ? " (output)" : "", t->dtype, t->reserved, t->data,
                (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3],
                (long long)t->strides[0], (long long)t->strides[1], (long long)t->strides[2], (long long)t->strides[3],
                x->guaranteed ? " must fail" : "");
    }
}

static int empty_view(const performer_tensor_t *t) {
    return t->shape[0] == 0 || t->shape[1] == 0 || t->shape[2] == 0 || t->shape[3] == 0;
}

enum { IGNORES_EPS = 1, IGNORES_KV = 2 };

enum { IN = 0, OUT = 1, OPT = 2, NEGINF = 4, INOUT = 8, WIDE = 16 /* float32 in a half call: lse, states */ };

/* Builds one tensor argument of logical shape `templ` (4 letters) and returns it, or NULL. */
static performer_tensor_t *tensor(Call *c, const char *templ, int flags) {
    Src *s = c->src;
    if (c->ntensors == MAX_TENSORS) return NULL;
    if ((flags & OPT) ? u8(s) % 2 == 0 : chance(s, 48)) {
        if (!(flags & OPT)) c->guaranteed_failure = 1; /* a required pointer is NULL */
        return NULL;
    }
    Tensor *x = &c->tensors[c->ntensors++];
    memset(x, 0, sizeof *x);
    x->templ = templ;
    x->output = (flags & (OUT | INOUT)) != 0;
    x->may_neg_inf = (flags & NEGINF) != 0;
    x->buffer = -1;
    performer_tensor_t *t = &x->t;
    for (int i = 0; i < 4; i++) t->shape[i] = template_dim(c, templ[i]);
    if (chance(s, 16)) t->shape[u8(s) % 4] = dim(s);
    /* The dtype the call needs here: the program's, but float32 for the lse and states of a half call. */
    int want = (flags & WIDE) && is_half(c->dtype) ? PERFORMER_FLOAT32 : c->dtype;
    t->dtype = want;
    if (chance(s, 40)) { /* 4, -1, 7: no performer_dtype; else another of the four */
        int odd[] = {4, -1, 7, (want + 1 + u8(s) % 3) % 4};
        t->dtype = odd[u8(s) % 4];
    }
    if (!valid_dtype(t->dtype) || (is_half(t->dtype) && !c->takes_half && !c->any_dtype)) x->guaranteed = 1;
    if (c->takes_half && t->dtype != want) x->guaranteed = 1; /* a half call takes exactly these dtypes */
    if (chance(s, 64)) { t->reserved = 1; x->guaranteed = 1; }
    int es = (int)esize(t->dtype);
    int64_t contiguous[4];
    uint64_t run = 1; /* wraps for huge shapes: such tensors fail or are skipped below either way */
    for (int i = 3; i >= 0; i--) { contiguous[i] = (int64_t)run; run *= t->shape[i] > 0 ? (uint64_t)t->shape[i] : 1; }
    memcpy(t->strides, contiguous, sizeof contiguous);
    int misaligned = 0;
    uint8_t mode = u8(s) % 16;
    switch (mode) {
    case 8: t->strides[0] = mulw(t->strides[0], 2); t->strides[1] = mulw(t->strides[1], 2); t->strides[2] = (int64_t)((uint64_t)t->strides[2] + 1); break; /* padded */
    case 9: {                                                                  /* permuted */
        int a = u8(s) % 4, b = u8(s) % 4;
        int64_t tmp = t->strides[a]; t->strides[a] = t->strides[b]; t->strides[b] = tmp;
        break;
    }
    case 10: { int a = u8(s) % 4; t->strides[a] = mulw(t->strides[a], -1); break; }                                /* reversed */
    case 11: t->strides[u8(s) % 4] = 0; break;                                  /* broadcast */
    case 12: memset(t->strides, 0, sizeof t->strides); break;
    case 13: {                                                                  /* huge */
        static const int64_t big[] = {INT64_C(1) << 40, INT64_C(1) << 61, -(INT64_C(1) << 62), INT64_MAX / 3,
                                      INT64_MIN, INT64_C(1) << 62};
        t->strides[u8(s) % 4] = big[u8(s) % 6];
        break;
    }
    case 14: for (int i = 0; i < 4; i++) t->strides[i] = (int8_t)u8(s) % 5; break;
    case 15: misaligned = 1; break;
    default: break;
    }
    int empty = 0, negative = 0;
    for (int i = 0; i < 4; i++) { empty |= t->shape[i] == 0; negative |= t->shape[i] < 0; }
    if (negative) x->guaranteed = 1;
    /* An output may not map two indices to one element. */
    for (int i = 0; i < 4; i++)
        if (x->output && !negative && !empty_view(t) && t->shape[i] > 1 && t->strides[i] == 0) x->guaranteed = 1;
    if (misaligned && !empty) x->guaranteed = 1; /* an empty view has no element to align */
    if (chance(s, 64)) {
        if (!empty) x->guaranteed = 1; /* NULL data is allowed only for an empty view */
        t->data = NULL;
        if (x->guaranteed) c->guaranteed_failure = 1;
        return t;
    }
    if (negative) { t->data = guard_page; c->guaranteed_failure = 1; return t; }
    if (empty) {
        /* No element: a 1-byte block, so any access is an ASan report. */
        int b = add_buffer(c, 1);
        x->buffer = b;
        t->data = c->buffers[b].base;
        if (x->guaranteed) c->guaranteed_failure = 1;
        return t;
    }
    __int128 lo, hi;
    extent(t, &lo, &hi);
    __int128 span = (hi - lo + 1) * es;
    if (span > INT64_MAX) {
        x->guaranteed = 1;
        c->guaranteed_failure = 1;
        t->data = guard_page + 4096 / 2;
        return t;
    }
    if (hi - lo + 1 > CAP_ELEMENTS) { c->skip = 1; return t; }
    int64_t count = (int64_t)(hi - lo + 1);
    size_t need = (size_t)count * es + (size_t)misaligned;
    /* Placement: an exact copy of an earlier view, inside an earlier buffer, or its own. */
    uint8_t place = u8(s) % 24;
    if (place == 0 && c->ntensors > 1) {
        Tensor *y = &c->tensors[u8(s) % (c->ntensors - 1)];
        if (y->buffer >= 0 && strcmp(y->templ, templ) == 0 && !y->guaranteed && !x->guaranteed) {
            *t = y->t;
            x->buffer = y->buffer;
            for (int i = 0; i < 4; i++)
                if (x->output && !empty_view(t) && t->shape[i] > 1 && t->strides[i] == 0) x->guaranteed = c->guaranteed_failure = 1;
            c->numerics_unknown = 1;
            return t;
        }
    } else if (place == 1 && c->nbuffers > 0) {
        int b = u8(s) % c->nbuffers;
        if (c->buffers[b].bytes >= need) {
            size_t room = (c->buffers[b].bytes - need) / es;
            size_t at = room ? (size_t)u8(s) % (room + 1) : 0;
            x->buffer = b;
            t->data = c->buffers[b].base + misaligned + ((ptrdiff_t)at - (ptrdiff_t)lo) * es;
            c->numerics_unknown = 1;
            if (x->guaranteed) c->guaranteed_failure = 1;
            return t;
        }
    }
    int b = add_buffer(c, need);
    x->buffer = b;
    unsigned char *base = c->buffers[b].base;
    t->data = base + misaligned - (ptrdiff_t)lo * es;
    if (x->output && !(flags & INOUT)) {
        memset(base, CANARY, need);
    } else {
        uint32_t state = u8(s) * 2654435761u + 1;
        unsigned char *aligned = base + misaligned;
        if (misaligned) memset(base, 0, need);
        for (int64_t i = 0; i < count; i++) store_value(t->dtype, aligned + i * es, moderate(&state));
        if (chance(s, 24)) { /* one non-finite or extreme value */
            static const double odd[] = {NAN, INFINITY, -INFINITY, 1e30, -1e300, 1e-45};
            double v = odd[u8(s) % 6];
            store_value(t->dtype, aligned + (u8(s) % count) * es, v);
            c->numerics_unknown = 1;
        }
    }
    if (x->guaranteed) c->guaranteed_failure = 1;
    return t;
}

/* ------------------------------------------------------------------ options and handles */

static void *keep(Call *c, void *p) { if (c->nextra < 8) c->extra[c->nextra++] = p; return p; }

/* A per-batch array for kv_lengths / kv_starts, or NULL, of c->B entries (the smallest shape[0]
 * of the tensors made so far, if any). Options are made before the tensors, whose shapes may
 * then be perturbed: whether an entry must fail is judged at the call (judge_per_batch). */
static const int64_t *per_batch(Call *c, int64_t L) {
    Src *s = c->src;
    if (u8(s) % 3 != 0) return NULL;
    int64_t n = INT64_MAX;
    for (int i = 0; i < c->ntensors; i++) if (c->tensors[i].t.shape[0] >= 0 && c->tensors[i].t.shape[0] < n) n = c->tensors[i].t.shape[0];
    if (n == INT64_MAX) n = c->B >= 0 ? c->B : 0;
    if (n > 64) { c->skip = 1; return NULL; }
    int64_t *a = keep(c, malloc(n ? (size_t)n * sizeof(int64_t) : 1));
    for (int64_t i = 0; i < n; i++) {
        uint8_t b = u8(s);
        int64_t past = L < INT64_MAX ? L + 1 : -1; /* the first length out of range */
        if (b >= 200) a[i] = (int64_t[]){-1, past, INT64_MAX, INT64_MIN}[b % 4];
        else a[i] = L >= 0 && L < 1000 ? b % (L + 1) : b % 8;
    }
    if (c->nper_batch < 2) {
        c->per_batch[c->nper_batch] = a;
        c->per_batch_count[c->nper_batch++] = n;
    }
    return a;
}

/* At the call: the library reads B = the tensors' shape[0] entries of each per-batch array and
 * checks them against L = the keys' shape[2]. An entry out of 0...L among those must fail; a
 * B beyond the array would read past it, so such a call is skipped. */
static void judge_per_batch(Call *c) {
    int64_t B = INT64_MAX, L = c->L;
    int have_l = 0;
    for (int i = 0; i < c->ntensors; i++) {
        const performer_tensor_t *t = &c->tensors[i].t;
        if (t->shape[0] >= 0 && t->shape[0] < B) B = t->shape[0];
        if (!have_l && c->tensors[i].templ[2] == 'L') { L = t->shape[2]; have_l = 1; }
    }
    if (B == INT64_MAX) B = c->B;
    for (int k = 0; k < c->nper_batch; k++) {
        if (B > c->per_batch_count[k]) { c->skip = 1; return; }
        if (c->ignores & IGNORES_KV) continue;
        for (int64_t i = 0; i < B; i++) {
            int64_t a = c->per_batch[k][i];
            if (a < 0 || (L >= 0 && a > L)) c->guaranteed_failure = 1;
        }
    }
}

/* The options struct's size: current, an older one, or bad. Returns the bytes to allocate. */
static size_t options_size(Call *c, size_t current, const size_t *older, int nolder, size_t *size) {
    uint8_t b = u8(c->src) % 16;
    if (b < 10) { *size = current; return current; }
    if (b < 13) { *size = older[b % nolder]; return *size; }
    static const size_t bad[] = {0, 1, 7, 12, 1000, SIZE_MAX};
    *size = bad[b % 6];
    c->guaranteed_failure = 1;
    return current;
}

static void *copy_options(Call *c, const void *opt, size_t bytes) {
    void *p = keep(c, malloc(bytes));
    memcpy(p, opt, bytes);
    return p;
}

static double scale_value(Call *c, int *moderate_scale) {
    static const double v[] = {0.5, 1.0, 0.125, 0, 2, -1, NAN, INFINITY, 1e300, 1e-300};
    int i = u8(c->src) % 10;
    *moderate_scale = i < 5;
    return v[i];
}

static const performer_softmax_options_t *softmax_options(Call *c) {
    if (u8(c->src) % 4 == 0) return NULL;
    performer_softmax_options_t o;
    performer_softmax_options_init(&o);
    o.causal = u8(c->src) % 2;
    o.has_scale = u8(c->src) % 2;
    int moderate_scale;
    o.scale = scale_value(c, &moderate_scale);
    if (o.has_scale && !isfinite(o.scale)) c->guaranteed_failure = 1;
    if (o.has_scale && !moderate_scale) c->numerics_unknown = 1;
    size_t older[] = {offsetof(performer_softmax_options_t, kv_starts)};
    size_t bytes = options_size(c, sizeof o, older, 1, &o.size);
    o.kv_lengths = per_batch(c, c->L);
    if (o.size == sizeof o) o.kv_starts = per_batch(c, c->L);
    return copy_options(c, &o, bytes);
}

static const performer_linear_options_t *linear_options(Call *c) {
    if (u8(c->src) % 4 == 0) { c->numerics_unknown |= 0; return NULL; }
    performer_linear_options_t o;
    performer_linear_options_init(&o);
    o.causal = u8(c->src) % 2;
    o.feature_map = u8(c->src) % 4 == 3 ? (int)(int8_t)u8(c->src) : (int)(u8(c->src) % 3);
    if (o.feature_map < 0 || o.feature_map > 2) c->guaranteed_failure = 1;
    if (o.feature_map == PERFORMER_FEATURE_IDENTITY) c->numerics_unknown = 1; /* denominators of any sign */
    static const double eps[] = {1e-6, 0, 1, -1, NAN, INFINITY};
    o.eps = eps[u8(c->src) % 6];
    if ((!(o.eps >= 0) || !isfinite(o.eps)) && !(c->ignores & IGNORES_EPS)) c->guaranteed_failure = 1;
    o.normalize = u8(c->src) % 3 != 0;
    size_t older[] = {offsetof(performer_linear_options_t, kv_starts), offsetof(performer_linear_options_t, normalize)};
    size_t bytes = options_size(c, sizeof o, older, 2, &o.size);
    o.kv_lengths = per_batch(c, c->L);
    if (o.size > offsetof(performer_linear_options_t, kv_starts)) o.kv_starts = per_batch(c, c->L);
    return copy_options(c, &o, bytes);
}

static const performer_favor_options_t *favor_options(Call *c, int *features) {
    *features = PERFORMER_FAVOR_POSITIVE;
    if (u8(c->src) % 4 == 0) return NULL;
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = u8(c->src) % 2;
    o.features = u8(c->src) % 8 == 7 ? (int)(int8_t)u8(c->src) : (int)(u8(c->src) % 4);
    if (o.features < 0 || o.features > 3) c->guaranteed_failure = 1;
    if (o.features == PERFORMER_FAVOR_TRIGONOMETRIC) c->numerics_unknown = 1; /* signed features */
    o.has_scale = u8(c->src) % 2;
    int moderate_scale;
    o.scale = scale_value(c, &moderate_scale);
    if (o.has_scale && (!isfinite(o.scale) || o.scale < 0)) c->guaranteed_failure = 1;
    if (o.has_scale && !moderate_scale) c->numerics_unknown = 1;
    static const double small[] = {0, 1e-3, 1, -1, NAN, 1e-45};
    o.eps = small[u8(c->src) % 6];
    o.relu_offset = small[u8(c->src) % 6];
    if ((!(o.eps >= 0) && !(c->ignores & IGNORES_EPS)) || !(o.relu_offset >= 0)) c->guaranteed_failure = 1;
    if (o.eps == 1e-45 || o.relu_offset == 1e-45) c->numerics_unknown = 1; /* issue 13 item 9 */
    size_t older[] = {offsetof(performer_favor_options_t, kv_starts)};
    size_t bytes = options_size(c, sizeof o, older, 1, &o.size);
    o.kv_lengths = per_batch(c, c->L);
    if (o.size == sizeof o) o.kv_starts = per_batch(c, c->L);
    *features = o.features;
    return copy_options(c, &o, bytes);
}

/* Handles made by this input, with the sizes they were made with. */
enum { LINEAR_DECODER, FAVOR_DECODER, PROJECTION, KINDS };
typedef struct {
    void *handle;
    int kind, live, dtype, fmap_or_features;
    int64_t B, H, Hk, D, M, F;
    int features_count_factor; /* C = F * factor for a FAVOR+ decoder */
    int state_unknown; /* the decoder's state may hold anything: set_state was called (z may cancel a
                          denominator) or a step took extreme or non-finite inputs into it */
} Handle;
static Handle handles[32];
static int nhandles;

/* A handle argument of `kind`: a live one, a destroyed one, one of another kind, garbage, NULL. */
static void *handle_arg(Call *c, int kind, Handle **found) {
    *found = NULL;
    uint8_t b = u8(c->src);
    if (b % 16 < 12 || b % 16 == 12) {
        int want_live = b % 16 < 12;
        for (int pass = 0; pass < 2; pass++)
            for (int i = nhandles - 1; i >= 0; i--)
                if (handles[i].kind == kind && handles[i].live == want_live) {
                    if (want_live) *found = &handles[i];
                    else c->guaranteed_failure = 1;
                    return handles[i].handle;
                }
    }
    c->guaranteed_failure = 1;
    switch (b % 4) {
    case 0: return NULL;
    case 1:
        for (int i = 0; i < nhandles; i++) if (handles[i].kind != kind && handles[i].live) return handles[i].handle;
        return (void *)(uintptr_t)1;
    case 2: return guard_page;
    default: return (void *)~(uintptr_t)0;
    }
}

static Handle *new_handle(int kind, void *h) {
    if (nhandles == 32) { /* full: destroy the oldest record's handle if live */
        fail("too many handles", "harness");
    }
    Handle *r = &handles[nhandles++];
    memset(r, 0, sizeof *r);
    r->kind = kind; r->handle = h; r->live = 1;
    return r;
}

static void destroy_handle(Handle *r) {
    if (r->kind == LINEAR_DECODER) performer_linear_decoder_destroy(r->handle);
    else if (r->kind == FAVOR_DECODER) performer_favor_decoder_destroy(r->handle);
    else performer_favor_projection_destroy(r->handle);
    r->live = 0;
}

/* ------------------------------------------------------------------ the oracle */

static const char *const argument_names[] = {
    "q", "k", "v", "out", "lse", "out_a", "lse_a", "out_b", "lse_b", "dout", "dq", "dk", "dv", "S0", "z0", "c0", "S_N", "z_N", "c_N",
    "dS_N", "dz_N", "dS0", "dz0", "S_out", "z_out", "c_out", "dS_out", "dz_out", "denominators", "row_units", "row_denominators",
    "x", "dfeatures", "dx", "w", "W", "s", "z", "c", "S", "Z", "C", "options", "kv_lengths", "kv_starts", "decoder",
    "projection", "dtype", "batch", "heads", "key_heads", "head_dim", "value_dim", "feature_map",
    "eps", "dim", "num_features", "kind", "norms", "features", "scale", "relu_offset", "count",
    "value", "state_s", "state_z", "state_c", "options->size", "n", NULL};

static int is_word_char(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'; }

static int names_an_argument(const char *msg) {
    for (const char *const *name = argument_names; *name; name++) {
        size_t len = strlen(*name);
        for (const char *p = strstr(msg, *name); p; p = strstr(p + 1, *name))
            if ((p == msg || !is_word_char(p[-1])) && !is_word_char(p[len])) return 1;
    }
    return 0;
}

static void snapshot(Call *c) {
    for (int b = 0; b < c->nbuffers; b++) memcpy(c->buffers[b].snapshot, c->buffers[b].base, c->buffers[b].bytes);
}

/* Marks the bytes of every output view (ok calls may write exactly those). */
static void mark_outputs(Call *c) {
    for (int i = 0; i < c->ntensors; i++) {
        Tensor *x = &c->tensors[i];
        if (!x->output || x->buffer < 0 || x->guaranteed || x->t.data == NULL) continue;
        const performer_tensor_t *t = &x->t;
        int64_t n = 1;
        for (int a = 0; a < 4; a++) n *= t->shape[a];
        if (n <= 0) continue;
        Buffer *b = &c->buffers[x->buffer];
        size_t es = esize(t->dtype);
        if (n > 4 * CAP_ELEMENTS) fail("accepted an output with more elements than its span holds", "mark_outputs");
        for (int64_t i0 = 0; i0 < t->shape[0]; i0++) for (int64_t i1 = 0; i1 < t->shape[1]; i1++)
        for (int64_t i2 = 0; i2 < t->shape[2]; i2++) for (int64_t i3 = 0; i3 < t->shape[3]; i3++) {
            int64_t o = i0 * t->strides[0] + i1 * t->strides[1] + i2 * t->strides[2] + i3 * t->strides[3];
            unsigned char *p = (unsigned char *)t->data + o * (int64_t)es;
            if (p >= b->base && p + es <= b->base + b->bytes) memset(b->written + (p - b->base), 1, es);
        }
    }
}

static void check_finite(Call *c, const char *fn) {
    for (int i = 0; i < c->ntensors; i++) {
        Tensor *x = &c->tensors[i];
        if (!x->output || x->buffer < 0 || x->t.data == NULL) continue;
        const performer_tensor_t *t = &x->t;
        for (int64_t i0 = 0; i0 < t->shape[0]; i0++) for (int64_t i1 = 0; i1 < t->shape[1]; i1++)
        for (int64_t i2 = 0; i2 < t->shape[2]; i2++) for (int64_t i3 = 0; i3 < t->shape[3]; i3++) {
            int64_t o = i0 * t->strides[0] + i1 * t->strides[1] + i2 * t->strides[2] + i3 * t->strides[3];
            double v = load_value(t->dtype, (const unsigned char *)t->data + o * (int64_t)esize(t->dtype));
            if (isfinite(v) || (x->may_neg_inf && v == -INFINITY)) continue;
            fprintf(stderr, "tensor %d (%s) element (%lld,%lld,%lld,%lld) = %g\n", i, x->templ,
                    (long long)i0, (long long)i1, (long long)i2, (long long)i3, v);
            fail("a non-finite output from finite moderate inputs", fn);
        }
    }
}

static void check(Call *c, const char *fn, int status) {
    if (status < 0 || status > 9) fail("status out of range", fn);
    if (status != PERFORMER_OK) {
        const char *msg = performer_last_error();
        if (msg == NULL || msg[0] == '\0') fail("an error without a message", fn);
        if (strlen(msg) > 511) fail("a message longer than 511 bytes", fn);
        if (!names_an_argument(msg)) fail("a message naming no argument", fn);
        for (int b = 0; b < c->nbuffers; b++)
            if (memcmp(c->buffers[b].snapshot, c->buffers[b].base, c->buffers[b].bytes) != 0)
                fail("memory written by a call that failed", fn);
        return;
    }
    if (c->guaranteed_failure) fail("status OK for arguments the header says must fail", fn);
    mark_outputs(c);
    for (int b = 0; b < c->nbuffers; b++) {
        Buffer *buf = &c->buffers[b];
        for (size_t i = 0; i < buf->bytes; i++)
            if (!buf->written[i] && buf->base[i] != buf->snapshot[i]) fail("a byte outside the output views changed", fn);
    }
    if (!c->numerics_unknown) check_finite(c, fn);
}

static void release(Call *c) {
    for (int b = 0; b < c->nbuffers; b++) { free(c->buffers[b].base); free(c->buffers[b].snapshot); free(c->buffers[b].written); }
    for (int i = 0; i < c->nextra; i++) free(c->extra[i]);
}

/* ------------------------------------------------------------------ the calls */

#define RUN(fn, ...)                                          \
    do {                                                      \
        judge_per_batch(c);                                   \
        if (c->skip || heavy(c)) return;                      \
        snapshot(c);                                          \
        performer_status status_ = fn(__VA_ARGS__);           \
        check(c, #fn, (int)status_);                          \
    } while (0)

/* Valid calls whose tensors (broadcast along a huge axis) describe much work would only time
 * out: the product of the largest extent per axis, the positions axis counted twice. */
static int heavy(Call *c) {
    if (c->guaranteed_failure) return 0;
    double m[4] = {1, 1, 1, 1};
    for (int i = 0; i < c->ntensors; i++)
        for (int a = 0; a < 4; a++)
            if ((double)c->tensors[i].t.shape[a] > m[a]) m[a] = (double)c->tensors[i].t.shape[a];
    return m[0] * m[1] * m[2] * m[2] * m[3] > 2e7;
}

static void sizes(Call *c) {
    c->B = dim(c->src); c->H = dim(c->src); c->N = dim(c->src); c->L = dim(c->src);
    c->D = dim(c->src); c->M = dim(c->src);
    c->Hk = u8(c->src) % 2 ? c->H : dim(c->src);
    c->C = c->D; c->Hs = c->Hk; c->F = c->D;
}

/* A decoder's state (B x H x C x M) that could be allocated but is large: creating it would
 * only be slow. Beyond ASan's largest allocation (2^40 bytes) it must fail, so it is kept. */
static int state_too_big(Call *c) {
    double bytes = 8.0 * (double)c->B * (double)c->H * ((double)c->C + 1) * ((double)c->M + 1);
    return bytes > 1e7 && bytes < 0x1p41;
}

/* Sizes whose work is large without any argument that must fail would only time out. */
static int too_much_work(Call *c) {
    double w = 1;
    double d[] = {(double)c->B, (double)c->H, (double)c->N, (double)c->L, (double)c->D + (double)c->M + (double)c->C, (double)c->Hs};
    for (int i = 0; i < 6; i++) w *= d[i] > 0 ? d[i] : 1;
    return w > 1e7;
}

static void call_softmax(Call *c, int backward) {
    sizes(c);
    c->takes_half = 1;
    if (!backward) {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *out = tensor(c, "BHNM", OUT), *lse = tensor(c, "BHN1", OUT | OPT | NEGINF | WIDE);
        const performer_softmax_options_t *o = softmax_options(c);
        RUN(performer_softmax_forward, q, k, v, out, lse, o);
    } else {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *out = tensor(c, "BHNM", IN), *lse = tensor(c, "BHN1", IN | WIDE), *dout = tensor(c, "BHNM", IN);
        performer_tensor_t *dq = tensor(c, "BHND", OUT), *dk = tensor(c, "BKLD", OUT), *dv = tensor(c, "BKLM", OUT);
        const performer_softmax_options_t *o = softmax_options(c);
        c->numerics_unknown = 1; /* lse is arbitrary here, so P = exp(s - lse) may overflow */
        RUN(performer_softmax_backward, q, k, v, out, lse, dout, dq, dk, dv, o);
    }
}

/* performer_softmax_merge: outs of one dtype, lses of it too or float32 for half outs; out
 * and lse may be written over either side with the same layout (the exact-copy placement),
 * any other overlap is refused. */
static void call_softmax_merge(Call *c) {
    sizes(c);
    c->takes_half = 1;
    performer_tensor_t *out_a = tensor(c, "BHNM", IN), *lse_a = tensor(c, "BHN1", IN | WIDE);
    performer_tensor_t *out_b = tensor(c, "BHNM", IN), *lse_b = tensor(c, "BHN1", IN | WIDE);
    performer_tensor_t *out = tensor(c, "BHNM", OUT), *lse = tensor(c, "BHN1", OUT | NEGINF | WIDE);
    RUN(performer_softmax_merge, out_a, lse_a, out_b, lse_b, out, lse);
}

static void call_linear(Call *c, int which) {
    sizes(c);
    c->takes_half = 1; /* half tokens, float32 states (and denominators) */
    /* Sums past the half type's range round to infinity (performer.h): no finiteness promise. */
    if (is_half(c->dtype)) c->numerics_unknown = 1;
    if (which == 0 || which == 1) {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *out = tensor(c, "BHNM", OUT);
        performer_tensor_t *s0 = tensor(c, "BHCM", IN | OPT | WIDE), *z0 = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *sn = tensor(c, "BHCM", OUT | OPT | WIDE), *zn = tensor(c, "BHC1", OUT | OPT | WIDE);
        if (which == 0) {
            const performer_linear_options_t *o = linear_options(c);
            RUN(performer_linear_forward, q, k, v, out, s0, z0, sn, zn, o);
        } else {
            performer_tensor_t *den = tensor(c, "BHN1", OUT | OPT | WIDE);
            const performer_linear_options_t *o = linear_options(c);
            RUN(performer_linear_forward_with_denominators, q, k, v, out, s0, z0, sn, zn, den, o);
        }
    } else if (which == 2) {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *dout = tensor(c, "BHNM", IN);
        performer_tensor_t *dq = tensor(c, "BHND", OUT), *dk = tensor(c, "BKLD", OUT), *dv = tensor(c, "BKLM", OUT);
        performer_tensor_t *s0 = tensor(c, "BHCM", IN | OPT | WIDE), *z0 = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *dsn = tensor(c, "BHCM", IN | OPT | WIDE), *dzn = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *ds0 = tensor(c, "BHCM", OUT | OPT | WIDE), *dz0 = tensor(c, "BHC1", OUT | OPT | WIDE);
        const performer_linear_options_t *o = linear_options(c);
        RUN(performer_linear_backward, q, k, v, dout, dq, dk, dv, s0, z0, dsn, dzn, ds0, dz0, o);
    } else if (which == 3 && u8(c->src) % 2) {
        /* The query-side initial-state gradient: denominators of any value (not a forward's):
         * no finiteness promise. Causal and the key ranges are ignored. */
        performer_tensor_t *q = tensor(c, "BHND", IN), *out = tensor(c, "BHNM", IN), *dout = tensor(c, "BHNM", IN);
        performer_tensor_t *den = tensor(c, "BHN1", IN | OPT | WIDE);
        performer_tensor_t *ds0 = tensor(c, "BHCM", OUT | WIDE), *dz0 = tensor(c, "BHC1", OUT | WIDE);
        c->ignores = IGNORES_KV;
        c->numerics_unknown = 1;
        const performer_linear_options_t *o = linear_options(c);
        int normalize = o == NULL || o->size <= offsetof(performer_linear_options_t, normalize) || o->normalize;
        if (den == NULL && normalize) c->guaranteed_failure = 1;
        RUN(performer_linear_initial_state_gradient, q, out, dout, den, ds0, dz0, o);
    } else if (which == 3) {
        if (u8(c->src) % 2) c->Hs = mulw(c->Hk, 1 + u8(c->src) % 2);
        performer_tensor_t *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *s0 = tensor(c, "BSCM", IN | OPT | WIDE), *z0 = tensor(c, "BSC1", IN | OPT | WIDE);
        performer_tensor_t *s = tensor(c, "BSCM", OUT | WIDE), *z = tensor(c, "BSC1", OUT | WIDE);
        c->ignores = IGNORES_EPS;
        const performer_linear_options_t *o = linear_options(c);
        RUN(performer_linear_state, k, v, s0, z0, s, z, o);
    } else {
        if (u8(c->src) % 2) c->Hs = mulw(c->Hk, 1 + u8(c->src) % 2);
        performer_tensor_t *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *ds = tensor(c, "BSCM", IN | WIDE), *dz = tensor(c, "BSC1", IN | WIDE);
        performer_tensor_t *dk = tensor(c, "BKLD", OUT), *dv = tensor(c, "BKLM", OUT);
        performer_tensor_t *ds0 = tensor(c, "BSCM", OUT | OPT | WIDE), *dz0 = tensor(c, "BSC1", OUT | OPT | WIDE);
        c->ignores = IGNORES_EPS;
        const performer_linear_options_t *o = linear_options(c);
        RUN(performer_linear_state_backward, k, v, ds, dz, dk, dv, ds0, dz0, o);
    }
}

/* A decoder's dtype: the program's, sometimes an unknown code (refused) or a half type (half
 * tokens, float32 state). */
static int decoder_dtype(Call *c) {
    uint8_t b = u8(c->src) % 16;
    int dtype = b == 0 ? 5 : b == 1 ? PERFORMER_FLOAT16 + u8(c->src) % 2 : c->dtype;
    if (!valid_dtype(dtype)) c->guaranteed_failure = 1;
    return dtype;
}

/* The oracle of a create call (*handle was 0x5A5A before): on error the handle is not written
 * and no handle was added. True when the call succeeded. */
static int created(Call *c, const char *fn, performer_status st, const void *handle, int64_t live_before) {
    check(c, fn, (int)st);
    if (st == PERFORMER_OK) return 1;
    if (handle != (const void *)(uintptr_t)0x5A5A) fail("handle written on error", fn);
    if (performer_live_handle_count() != live_before) fail("live handle count changed on error", fn);
    return 0;
}

static void call_linear_decoder(Call *c, int which) {
    if (which == 0) {
        int dtype = decoder_dtype(c);
        sizes(c);
        static const double eps[] = {1e-6, 0, -1, NAN};
        int fmap = u8(c->src) % 8 == 7 ? -1 : u8(c->src) % 3;
        double e = eps[u8(c->src) % 4];
        performer_linear_decoder_t d = (performer_linear_decoder_t)(uintptr_t)0x5A5A;
        performer_linear_decoder_t *where = chance(c->src, 32) ? NULL : &d;
        if (!where || fmap < 0 || !(e >= 0) || c->B < 0 || c->H < 0 || c->M < 0 || c->Hk < 1 || c->D < 1)
            c->guaranteed_failure = 1;
        if (!c->guaranteed_failure && state_too_big(c)) return;
        int64_t before = performer_live_handle_count();
        performer_status st = performer_linear_decoder_create(where, dtype, c->B, c->H, c->Hk, c->D, c->M, fmap, e);
        if (!created(c, "performer_linear_decoder_create", st, d, before)) return;
        Handle *r = new_handle(LINEAR_DECODER, d);
        r->dtype = dtype; r->fmap_or_features = fmap; r->B = c->B; r->H = c->H; r->Hk = c->Hk; r->D = c->D; r->M = c->M;
        return;
    }
    Handle *r;
    void *h = handle_arg(c, LINEAR_DECODER, &r);
    if (which == 1) { performer_linear_decoder_destroy(h); if (r) r->live = 0; return; }
    if (r) { c->dtype = r->dtype; c->B = r->B; c->H = r->H; c->Hk = r->Hk; c->D = r->D; c->M = r->M; c->C = r->D; }
    else sizes(c);
    if (r && r->fmap_or_features == PERFORMER_FEATURE_IDENTITY) c->numerics_unknown = 1;
    if (r && r->state_unknown) c->numerics_unknown = 1;
    c->takes_half = 1; /* exactly the decoder's dtype for tokens, its state dtype (WIDE) for states */
    /* A half decoder's outputs past the half type's range round to infinity: no finiteness promise. */
    if (is_half(c->dtype)) c->numerics_unknown = 1;
    c->N = 1; c->L = 1;
    switch (which) {
    case 2: RUN(performer_linear_decoder_reset, h); break;
    case 3: {
        performer_tensor_t *q = tensor(c, "BH1D", IN), *k = tensor(c, "BK1D", IN), *v = tensor(c, "BK1M", IN);
        performer_tensor_t *out = tensor(c, "BH1M", OUT);
        if (r && c->numerics_unknown) r->state_unknown = 1;
        RUN(performer_linear_decoder_step, h, q, k, v, out);
        break;
    }
    case 4: {
        performer_tensor_t *q = tensor(c, "BH1D", IN), *k = tensor(c, "BK1D", IN), *v = tensor(c, "BK1M", IN);
        performer_tensor_t *out = tensor(c, "BH1M", OUT);
        performer_tensor_t *s = tensor(c, "BHCM", INOUT | WIDE), *z = tensor(c, "BHC1", INOUT | WIDE);
        c->numerics_unknown = 1; /* s, z are arbitrary states (z may cancel the denominator) */
        RUN(performer_linear_decoder_step_with_state, h, q, k, v, out, s, z);
        break;
    }
    case 5: {
        c->N = dim(c->src);
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKND", IN), *v = tensor(c, "BKNM", IN);
        performer_tensor_t *out = tensor(c, "BHNM", OUT);
        if (r && c->numerics_unknown) r->state_unknown = 1;
        c->numerics_unknown = 1; /* the state may come from set_state */
        RUN(performer_linear_decoder_prefill, h, q, k, v, out);
        break;
    }
    case 6: {
        performer_tensor_t *s = tensor(c, "BHCM", OUT | WIDE), *z = tensor(c, "BHC1", OUT | WIDE);
        c->numerics_unknown = 1;
        RUN(performer_linear_decoder_get_state, h, s, z);
        break;
    }
    default: {
        performer_tensor_t *s = tensor(c, "BHCM", IN | WIDE), *z = tensor(c, "BHC1", IN | WIDE);
        if (r) r->state_unknown = 1;
        RUN(performer_linear_decoder_set_state, h, s, z);
        break;
    }
    }
}

static void call_projection(Call *c, int which) {
    if (which == 0 || which == 1) {
        performer_favor_projection_t p = (performer_favor_projection_t)(uintptr_t)0x5A5A;
        performer_favor_projection_t *where = chance(c->src, 32) ? NULL : &p;
        int64_t before = performer_live_handle_count();
        performer_status st;
        int64_t D, F;
        const char *fn;
        if (which == 0) {
            D = dim(c->src); F = dim(c->src);
            if (u8(c->src) % 2) F = mulw(D, 1 + u8(c->src) % 3);
            int kind = u8(c->src) % 8 == 7 ? 9 : u8(c->src) % 2, norms = u8(c->src) % 8 == 7 ? -3 : u8(c->src) % 2;
            uint64_t seed = u8(c->src);
            if (!where || D < 1 || F < 1 || kind > 1 || norms < 0) c->guaranteed_failure = 1;
            double entries = kind == 0 && D > 0 && F > 0 ? (double)D * (double)D * ceil((double)F / (double)D) : (double)D * (double)F;
            if (entries > 0x1p40 && D > 0 && F > 0) c->guaranteed_failure = 1; /* SIZE_OVERFLOW */
            /* Drawing a large W is slow and needs its memory; beyond ASan's limit it must fail. */
            if (!c->guaranteed_failure && entries > 2e5 && entries < 0x1p37) return;
            fn = "performer_favor_projection_create";
            snapshot(c);
            st = performer_favor_projection_create(where, D, F, kind, norms, seed);
        } else {
            sizes(c);
            c->F = dim(c->src);
            c->any_dtype = 1;
            performer_tensor_t *w = tensor(c, "11FD", IN);
            if (!where) c->guaranteed_failure = 1;
            if (c->skip) return;
            D = w ? w->shape[3] : 0; F = w ? w->shape[2] : 0;
            fn = "performer_favor_projection_create_from_matrix";
            snapshot(c);
            st = performer_favor_projection_create_from_matrix(where, w);
        }
        if (!created(c, fn, st, p, before)) return;
        Handle *r = new_handle(PROJECTION, p);
        r->D = D; r->F = F;
        return;
    }
    Handle *r;
    void *h = handle_arg(c, PROJECTION, &r);
    union { int64_t i; uint64_t u; int e; unsigned char bytes[8]; } value;
    memset(&value, 0xA5, sizeof value);
    void *where = chance(c->src, 16) ? NULL : &value;
    int kind = u8(c->src) % 8;
    /* A value written on error is caught by comparing with the fill. */
    performer_status st = PERFORMER_OK;
    const char *fn = "";
    switch (which) {
    case 2: performer_favor_projection_destroy(h); if (r) r->live = 0; return;
    case 3: fn = "performer_favor_projection_redraw"; snapshot(c); st = performer_favor_projection_redraw(h); break;
    case 4: {
        c->dtype = c->dtype; c->D = r ? r->D : dim(c->src); c->F = r ? r->F : dim(c->src); c->B = c->H = 1;
        c->any_dtype = 1;
        performer_tensor_t *out = tensor(c, "11FD", OUT);
        RUN(performer_favor_projection_get_matrix, h, out);
        return;
    }
    default:
        if (!where) c->guaranteed_failure = 1;
        snapshot(c);
        switch (kind) {
        case 0: fn = "get_dim"; st = performer_favor_projection_get_dim(h, where); break;
        case 1: fn = "get_num_features"; st = performer_favor_projection_get_num_features(h, where); break;
        case 2: fn = "get_seed"; st = performer_favor_projection_get_seed(h, where); break;
        case 3: fn = "get_draw"; st = performer_favor_projection_get_draw(h, where); break;
        case 4: fn = "get_kind"; st = performer_favor_projection_get_kind(h, where); break;
        case 5: fn = "get_norms"; st = performer_favor_projection_get_norms(h, where); break;
        default: {
            int features = u8(c->src) % 8 == 7 ? 11 : u8(c->src) % 4;
            if (features == 11) c->guaranteed_failure = 1;
            fn = "performer_favor_feature_count";
            st = performer_favor_feature_count(h, features, where);
            if (st == PERFORMER_OK && value.i != mulw(r->F, (features == 1 || features == 2) ? 2 : 1))
                fail("wrong feature count", fn);
            break;
        }
        }
    }
    check(c, fn, (int)st);
    if (st != PERFORMER_OK) {
        for (int i = 0; i < 8; i++) if (value.bytes[i] != 0xA5) fail("value written on error", fn);
    } else if (kind == 0 && which != 3 && value.i != r->D) {
        fail("wrong dim", fn);
    }
}

/* FAVOR+ sizes from a projection argument (live or not). */
static void *favor_projection(Call *c, int *features_out, const performer_favor_options_t **o) {
    Handle *r;
    sizes(c);
    void *h = handle_arg(c, PROJECTION, &r);
    if (r) { c->D = r->D; c->F = r->F; }
    *o = favor_options(c, features_out);
    c->C = mulw(c->F, (*features_out == 1 || *features_out == 2) ? 2 : 1);
    return h;
}

static void call_favor(Call *c, int which) {
    int features;
    const performer_favor_options_t *o;
    /* which 4 draws, one time in three, the query-side initial-state gradient instead of the
     * state-only call: float32/float64 only; eps, causal and the key ranges unread. */
    int query_side = which == 4 && u8(c->src) % 3 == 0;
    c->ignores = which < 2 || query_side ? IGNORES_EPS | IGNORES_KV : which >= 4 ? IGNORES_EPS : 0;
    void *h = favor_projection(c, &features, &o);
    c->takes_half = !query_side; /* half tokens, float32 states (and denominators) */
    /* Sums past the half type's range round to infinity (performer.h): no finiteness promise. */
    if (is_half(c->dtype)) c->numerics_unknown = 1;
    if (too_much_work(c)) { c->skip = 1; return; }
    switch (query_side ? 6 : which) {
    case 0: {
        performer_tensor_t *x = tensor(c, "BHND", IN), *out = tensor(c, "BHNC", OUT | NEGINF);
        c->numerics_unknown = 1; /* features are the mathematical values: they may overflow */
        RUN(performer_favor_features, x, h, out, o);
        break;
    }
    case 1: {
        performer_tensor_t *x = tensor(c, "BHND", IN), *df = tensor(c, "BHNC", IN), *dx = tensor(c, "BHND", OUT);
        c->numerics_unknown = 1;
        RUN(performer_favor_features_backward, x, h, df, dx, o);
        break;
    }
    case 2: {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *out = tensor(c, "BHNM", OUT);
        performer_tensor_t *s0 = tensor(c, "BHCM", IN | OPT | WIDE), *z0 = tensor(c, "BHC1", IN | OPT | WIDE), *c0 = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *sn = tensor(c, "BHCM", OUT | OPT | WIDE), *zn = tensor(c, "BHC1", OUT | OPT | WIDE), *cn = tensor(c, "BHC1", OUT | OPT | NEGINF | WIDE);
        if (s0 || z0 || c0) c->numerics_unknown = 1; /* arbitrary initial states */
        if (u8(c->src) % 2) {
            /* The row scales: both or neither; U_i is -inf for a row that sees no key. */
            performer_tensor_t *units = tensor(c, "BHN1", OUT | OPT | NEGINF | WIDE);
            performer_tensor_t *dens = tensor(c, "BHN1", OUT | OPT | WIDE);
            if ((units == NULL) != (dens == NULL)) c->guaranteed_failure = 1;
            RUN(performer_favor_forward_with_row_scales, q, k, v, h, out, s0, z0, c0, sn, zn, cn, units, dens, o);
        } else {
            RUN(performer_favor_forward, q, k, v, h, out, s0, z0, c0, sn, zn, cn, o);
        }
        break;
    }
    case 3: {
        performer_tensor_t *q = tensor(c, "BHND", IN), *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *dout = tensor(c, "BHNM", IN);
        performer_tensor_t *dq = tensor(c, "BHND", OUT), *dk = tensor(c, "BKLD", OUT), *dv = tensor(c, "BKLM", OUT);
        performer_tensor_t *s0 = tensor(c, "BHCM", IN | OPT | WIDE), *z0 = tensor(c, "BHC1", IN | OPT | WIDE), *c0 = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *dsn = tensor(c, "BHCM", IN | OPT | WIDE), *dzn = tensor(c, "BHC1", IN | OPT | WIDE);
        performer_tensor_t *ds0 = tensor(c, "BHCM", OUT | OPT | WIDE), *dz0 = tensor(c, "BHC1", OUT | OPT | WIDE);
        if (s0 || z0 || c0) c->numerics_unknown = 1;
        RUN(performer_favor_backward, q, k, v, dout, h, dq, dk, dv, s0, z0, c0, dsn, dzn, ds0, dz0, o);
        break;
    }
    case 4: {
        if (u8(c->src) % 2) c->Hs = mulw(c->Hk, 1 + u8(c->src) % 2);
        performer_tensor_t *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *s0 = tensor(c, "BSCM", IN | OPT | WIDE), *z0 = tensor(c, "BSC1", IN | OPT | WIDE), *c0 = tensor(c, "BSC1", IN | OPT | WIDE);
        performer_tensor_t *s = tensor(c, "BSCM", OUT | WIDE), *z = tensor(c, "BSC1", OUT | WIDE), *cc = tensor(c, "BSC1", OUT | NEGINF | WIDE);
        if (s0 || z0 || c0) c->numerics_unknown = 1;
        RUN(performer_favor_state, k, v, h, s0, z0, c0, s, z, cc, o);
        break;
    }
    case 6: {
        /* Shifts, row units and denominators of any value (not a forward's): no finiteness promise. */
        performer_tensor_t *q = tensor(c, "BHND", IN), *c0 = tensor(c, "BHC1", IN);
        performer_tensor_t *units = tensor(c, "BHN1", IN), *dens = tensor(c, "BHN1", IN);
        performer_tensor_t *out = tensor(c, "BHNM", IN), *dout = tensor(c, "BHNM", IN);
        performer_tensor_t *ds0 = tensor(c, "BHCM", OUT), *dz0 = tensor(c, "BHC1", OUT);
        c->numerics_unknown = 1;
        RUN(performer_favor_initial_state_gradient, q, h, c0, units, dens, out, dout, ds0, dz0, o);
        break;
    }
    default: {
        if (u8(c->src) % 2) c->Hs = mulw(c->Hk, 1 + u8(c->src) % 2);
        performer_tensor_t *k = tensor(c, "BKLD", IN), *v = tensor(c, "BKLM", IN);
        performer_tensor_t *ds = tensor(c, "BSCM", IN | WIDE), *dz = tensor(c, "BSC1", IN | WIDE);
        performer_tensor_t *dk = tensor(c, "BKLD", OUT), *dv = tensor(c, "BKLM", OUT);
        performer_tensor_t *ds0 = tensor(c, "BSCM", OUT | OPT | WIDE), *dz0 = tensor(c, "BSC1", OUT | OPT | WIDE);
        performer_tensor_t *s0 = tensor(c, "BSCM", IN | OPT | WIDE), *z0 = tensor(c, "BSC1", IN | OPT | WIDE), *c0 = tensor(c, "BSC1", IN | OPT | WIDE);
        if (s0 || z0 || c0) c->numerics_unknown = 1;
        RUN(performer_favor_state_backward, k, v, h, ds, dz, dk, dv, ds0, dz0, s0, z0, c0, o);
        break;
    }
    }
}

static void call_favor_decoder(Call *c, int which) {
    if (which == 0) {
        int features;
        const performer_favor_options_t *o;
        c->ignores = IGNORES_KV;
        void *h = favor_projection(c, &features, &o);
        int dtype = decoder_dtype(c);
        performer_favor_decoder_t d = (performer_favor_decoder_t)(uintptr_t)0x5A5A;
        performer_favor_decoder_t *where = chance(c->src, 32) ? NULL : &d;
        if (!where || c->B < 0 || c->H < 0 || c->M < 0) c->guaranteed_failure = 1;
        if (c->skip || (!c->guaranteed_failure && state_too_big(c))) return;
        int64_t before = performer_live_handle_count();
        snapshot(c);
        performer_status st = performer_favor_decoder_create(where, h, dtype, c->B, c->H, c->M, o);
        if (!created(c, "performer_favor_decoder_create", st, d, before)) return;
        Handle *r = new_handle(FAVOR_DECODER, d);
        r->dtype = dtype; r->fmap_or_features = features; r->B = c->B; r->H = c->H; r->D = c->D; r->M = c->M; r->F = c->F;
        r->features_count_factor = (features == 1 || features == 2) ? 2 : 1;
        return;
    }
    Handle *r;
    void *h = handle_arg(c, FAVOR_DECODER, &r);
    if (which == 1) { performer_favor_decoder_destroy(h); if (r) r->live = 0; return; }
    sizes(c);
    if (r) { c->dtype = r->dtype; c->B = r->B; c->H = r->H; c->Hk = r->H; c->D = r->D; c->M = r->M; c->C = mulw(r->F, r->features_count_factor); }
    c->numerics_unknown = 1; /* the state may come from set_state, the options from create */
    c->takes_half = 1; /* exactly the decoder's dtype for tokens, its state dtype (WIDE) for states */
    /* A half decoder's outputs past the half type's range round to infinity: no finiteness promise. */
    if (is_half(c->dtype)) c->numerics_unknown = 1;
    switch (which) {
    case 2: RUN(performer_favor_decoder_reset, h); break;
    case 3: {
        performer_tensor_t *q = tensor(c, "BH1D", IN), *k = tensor(c, "BH1D", IN), *v = tensor(c, "BH1M", IN);
        performer_tensor_t *out = tensor(c, "BH1M", OUT);
        RUN(performer_favor_decoder_step, h, q, k, v, out);
        break;
    }
    case 4: {
        performer_tensor_t *s = tensor(c, "BHCM", OUT | WIDE), *z = tensor(c, "BHC1", OUT | WIDE);
        performer_tensor_t *cc = tensor(c, "BHC1", OUT | NEGINF | WIDE);
        RUN(performer_favor_decoder_get_state, h, s, z, cc);
        break;
    }
    default: {
        performer_tensor_t *s = tensor(c, "BHCM", IN | WIDE), *z = tensor(c, "BHC1", IN | WIDE);
        performer_tensor_t *cc = tensor(c, "BHC1", IN | WIDE);
        RUN(performer_favor_decoder_set_state, h, s, z, cc);
        break;
    }
    }
}

static void call_misc(Call *c, int which) {
    switch (which) {
    case 0:
        if (performer_version() != PERFORMER_VERSION_NUMBER || performer_abi_version() != PERFORMER_ABI_VERSION)
            fail("version mismatch", "performer_version");
        if (performer_version_string() == NULL || performer_kernel_isa() == NULL) fail("NULL string", "version/isa");
        break;
    case 1: {
        int st = (int)(int8_t)u8(c->src);
        const char *s = performer_status_string((performer_status)st);
        if (s == NULL || s[0] == '\0') fail("empty status string", "performer_status_string");
        break;
    }
    case 2: {
        static const int n[] = {1, 2, 3, 0, -1, 1025, 1, 2};
        int k = n[u8(c->src) % 8];
        int before = performer_get_num_threads();
        performer_status st = performer_set_num_threads(k);
        if ((k < 0 || k > 1024) != (st != PERFORMER_OK)) fail("set_num_threads status", "performer_set_num_threads");
        if (st != PERFORMER_OK && performer_get_num_threads() != before) fail("thread count changed on error", "performer_set_num_threads");
        if (performer_get_num_threads() < 1) fail("thread count below 1", "performer_get_num_threads");
        break;
    }
    default:
        performer_softmax_options_init(NULL);
        performer_linear_options_init(NULL);
        performer_favor_options_init(NULL);
        break;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    guard_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_page == MAP_FAILED) abort();
    /* More threads than cores: a pool larger than this machine's is exercised too. */
    performer_set_num_threads(3);
    return 0;
}

/* Library allocations that cannot be satisfied must come back NULL (the library then returns
 * PERFORMER_ERROR_OUT_OF_MEMORY), not stop the run. */
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Src src = {data, size};
    int64_t live_before = performer_live_handle_count();
    uint8_t b = u8(&src); /* float32, float64; one program in four float16 or bfloat16 */
    int dtype = b % 8 < 6 ? b % 2 : PERFORMER_FLOAT16 + b % 2;
    nhandles = 0;
    for (int n = 0; n < MAX_CALLS && src.n > 0; n++) {
        Call call;
        memset(&call, 0, sizeof call);
        Call *c = &call;
        c->src = &src;
        c->dtype = dtype;
        current = c;
        uint8_t op = u8(&src) % 48;
        if (op < 2) call_softmax(c, op);
        else if (op < 7) call_linear(c, op - 2);
        else if (op < 15) call_linear_decoder(c, op - 7);
        else if (op < 25) call_projection(c, op - 15);
        else if (op < 31) call_favor(c, op - 25);
        else if (op < 37) call_favor_decoder(c, op - 31);
        else if (op < 41) call_misc(c, op - 37);
        else if (op == 41) call_softmax_merge(c);
        else call_favor(c, 2 + op % 2); /* FAVOR+ attention, the largest surface, twice as often */
        release(c);
        current = NULL;
    }
    for (int i = 0; i < nhandles; i++) if (handles[i].live) destroy_handle(&handles[i]);
    if (performer_live_handle_count() != live_before) fail("handles leaked", "destroy");
    return 0;
}
