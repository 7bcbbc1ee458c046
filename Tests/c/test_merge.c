/* performer_softmax_merge: partial softmax results over disjoint key sets merged by their
 * log-sum-exp equal the forward over all the keys; the merge is associative; rows that saw no
 * key (lse -inf) add nothing and are never read, and a row empty on both sides is 0, never NaN;
 * in place and strided outputs; bad arguments give a status and a message naming the argument,
 * with nothing written. Prints "N passed, M failed". */
#define _GNU_SOURCE
#include "test_support.h"

enum { B = 2, H = 3, HK = 1, N = 5, L = 12, D = 4, M = 3 };

static void fill(performer_tensor_t *t, uint64_t seed) {
    int64_t i = 0;
    FOR4(t) set_at(t, i0, i1, i2, i3, value_at(seed, i++));
}

/* Keys [from, to) of a B x Hk x L x X tensor. */
static performer_tensor_t keys(const performer_tensor_t *t, int64_t from, int64_t to) {
    performer_tensor_t x = *t;
    x.shape[2] = to - from;
    x.data = (char *)t->data + (size_t)(from * t->strides[2]) * elem_size(t->dtype);
    return x;
}

typedef struct {
    performer_tensor_t out, lse;
} partial;

static partial partial_new(int dtype) {
    partial p = {tensor_new(dtype, B, H, N, M), tensor_new(dtype, B, H, N, 1)};
    return p;
}

static void partial_free(partial *p) {
    free(p->out.data);
    free(p->lse.data);
}

/* The forward of q against keys [from, to), with per-batch key lengths (in the part's indices) or NULL. */
static partial forward_part(int dtype, const performer_tensor_t *q, const performer_tensor_t *k,
                            const performer_tensor_t *v, int64_t from, int64_t to, const int64_t *lengths) {
    partial p = partial_new(dtype);
    performer_tensor_t kp = keys(k, from, to), vp = keys(v, from, to);
    performer_softmax_options_t options;
    performer_softmax_options_init(&options);
    options.kv_lengths = lengths;
    OK(performer_softmax_forward(q, &kp, &vp, &p.out, &p.lse, &options), "forward of a part");
    return p;
}

static int same_values(const performer_tensor_t *a, const performer_tensor_t *b, double tolerance) {
    FOR4(a) {
        double x = at(a, i0, i1, i2, i3), y = at(b, i0, i1, i2, i3);
        if (x == y) continue;  /* also -inf == -inf */
        if (!(fabs(x - y) <= tolerance * (1 + fabs(y)))) return 0;
    }
    return 1;
}

/* Two halves merged = all keys; three parts merged either way round = all keys. */
static void merge_equals_whole(int dtype) {
    double tol = dtype == PERFORMER_FLOAT32 ? 2e-6 : 1e-13;
    performer_tensor_t q = tensor_new(dtype, B, H, N, D), k = tensor_new(dtype, B, HK, L, D);
    performer_tensor_t v = tensor_new(dtype, B, HK, L, M);
    fill(&q, 1), fill(&k, 2), fill(&v, 3);
    partial whole = forward_part(dtype, &q, &k, &v, 0, L, NULL);
    partial a = forward_part(dtype, &q, &k, &v, 0, 3, NULL), b = forward_part(dtype, &q, &k, &v, 3, 7, NULL);
    partial c = forward_part(dtype, &q, &k, &v, 7, L, NULL);

    partial ab = partial_new(dtype), ab_c = partial_new(dtype), bc = partial_new(dtype), a_bc = partial_new(dtype);
    OK(performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &ab.out, &ab.lse), "merge a, b");
    OK(performer_softmax_merge(&ab.out, &ab.lse, &c.out, &c.lse, &ab_c.out, &ab_c.lse), "merge ab, c");
    OK(performer_softmax_merge(&b.out, &b.lse, &c.out, &c.lse, &bc.out, &bc.lse), "merge b, c");
    OK(performer_softmax_merge(&a.out, &a.lse, &bc.out, &bc.lse, &a_bc.out, &a_bc.lse), "merge a, bc");
    CHECK(same_values(&ab_c.out, &whole.out, tol) && same_values(&ab_c.lse, &whole.lse, tol),
          "dtype %d: (a b) c differs from the forward over all keys", dtype);
    CHECK(same_values(&a_bc.out, &ab_c.out, tol) && same_values(&a_bc.lse, &ab_c.lse, tol),
          "dtype %d: a (b c) differs from (a b) c", dtype);

    /* In place over a, and b given as a strided view (a B x N x H x M buffer seen as B x H x N x M). */
    performer_tensor_t bt = tensor_new(dtype, B, N, H, M);
    bt.shape[1] = H, bt.shape[2] = N;
    bt.strides[0] = N * H * M, bt.strides[1] = M, bt.strides[2] = H * M, bt.strides[3] = 1;
    FOR4(&b.out) set_at(&bt, i0, i1, i2, i3, at(&b.out, i0, i1, i2, i3));
    OK(performer_softmax_merge(&a.out, &a.lse, &bt, &b.lse, &a.out, &a.lse), "merge in place, strided b");
    CHECK(same_values(&a.out, &ab.out, 0) && same_values(&a.lse, &ab.lse, 0),
          "dtype %d: in place with a strided b differs from the merge into new tensors", dtype);

    free(bt.data), free(q.data), free(k.data), free(v.data);
    partial *all[] = {&whole, &a, &b, &c, &ab, &ab_c, &bc, &a_bc};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) partial_free(all[i]);
}

/* Batch 0's keys in part a are all masked (lse -inf, out 0): the merge gives part b exactly,
 * even with NaN written into a's empty rows; a row empty on both sides is 0 with lse -inf. */
static void masked_rows(int dtype) {
    performer_tensor_t q = tensor_new(dtype, B, H, N, D), k = tensor_new(dtype, B, HK, L, D);
    performer_tensor_t v = tensor_new(dtype, B, HK, L, M);
    fill(&q, 4), fill(&k, 5), fill(&v, 6);
    int64_t none_for_0[B] = {0, 6}, none[B] = {0, 0};
    partial a = forward_part(dtype, &q, &k, &v, 0, 6, none_for_0), b = forward_part(dtype, &q, &k, &v, 6, L, NULL);
    partial e1 = forward_part(dtype, &q, &k, &v, 0, 6, none), e2 = forward_part(dtype, &q, &k, &v, 6, L, none);
    CHECK(isinf(at(&a.lse, 0, 0, 0, 0)) && at(&a.lse, 0, 0, 0, 0) < 0, "a masked row's lse is -inf");
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < N; i++)
            for (int64_t x = 0; x < M; x++) set_at(&a.out, 0, h, i, x, NAN);

    partial r = partial_new(dtype);
    OK(performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &r.lse), "merge with empty rows");
    performer_tensor_t r0 = batch_rows(&r.out, 0, 0, N), b0 = batch_rows(&b.out, 0, 0, N);
    performer_tensor_t rl0 = batch_rows(&r.lse, 0, 0, N), bl0 = batch_rows(&b.lse, 0, 0, N);
    CHECK(same_values(&r0, &b0, 0) && same_values(&rl0, &bl0, 0), "dtype %d: merging an empty side changed the rows",
          dtype);
    OK(performer_softmax_merge(&b.out, &b.lse, &a.out, &a.lse, &r.out, &r.lse), "merge with empty rows, swapped");
    CHECK(same_values(&r0, &b0, 0), "dtype %d: merging an empty side (second) changed the rows", dtype);

    fill_value(&r.out, SENTINEL);
    OK(performer_softmax_merge(&e1.out, &e1.lse, &e2.out, &e2.lse, &r.out, &r.lse), "merge two empty rows");
    int clean = 1;
    FOR4(&r.out) clean &= at(&r.out, i0, i1, i2, i3) == 0;
    FOR4(&r.lse) clean &= isinf(at(&r.lse, i0, i1, i2, i3)) && at(&r.lse, i0, i1, i2, i3) < 0;
    CHECK(clean, "dtype %d: rows empty on both sides are not 0 with lse -inf", dtype);

    free(q.data), free(k.data), free(v.data);
    partial *all[] = {&a, &b, &e1, &e2, &r};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) partial_free(all[i]);
}

/* Every error: its status, a message naming the argument, and outputs left as they were. */
static void errors(void) {
    int f = PERFORMER_FLOAT32;
    partial a = partial_new(f), b = partial_new(f), r = partial_new(f);
    performer_tensor_t wide = tensor_new(f, B, H, N, M + 1), lse64 = tensor_new(PERFORMER_FLOAT64, B, H, N, 1);
    performer_tensor_t big = tensor_new(f, B, H, 2 * N, M);
    fill_value(&r.out, SENTINEL), fill_value(&r.lse, SENTINEL);
#define UNTOUCHED() CHECK(is_value(&r.out, SENTINEL) && is_value(&r.lse, SENTINEL), "an output was written on error")
    expect_status("NULL out_a", performer_softmax_merge(NULL, &a.lse, &b.out, &b.lse, &r.out, &r.lse),
                  PERFORMER_ERROR_NULL_POINTER, "out_a");
    expect_status("NULL lse", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, NULL),
                  PERFORMER_ERROR_NULL_POINTER, "lse");
    expect_status("float64 lse_b", performer_softmax_merge(&a.out, &a.lse, &b.out, &lse64, &r.out, &r.lse),
                  PERFORMER_ERROR_DTYPE_MISMATCH, "lse_b");
    expect_status("out_b too wide", performer_softmax_merge(&a.out, &a.lse, &wide, &b.lse, &r.out, &r.lse),
                  PERFORMER_ERROR_SHAPE_MISMATCH, "out_b.shape[3]");
    expect_status("lse too long", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &wide),
                  PERFORMER_ERROR_SHAPE_MISMATCH, "lse.shape[3]");
    UNTOUCHED();
    set_at(&a.lse, 1, 2, 3, 0, NAN);
    expect_status("NaN in lse_a", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &r.lse),
                  PERFORMER_ERROR_INVALID_ARGUMENT, "lse_a[1, 2, 3]");
    set_at(&a.lse, 1, 2, 3, 0, 0);
    set_at(&b.lse, 0, 1, 4, 0, INFINITY);
    expect_status("+inf in lse_b", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &r.lse),
                  PERFORMER_ERROR_INVALID_ARGUMENT, "lse_b[0, 1, 4]");
    set_at(&b.lse, 0, 1, 4, 0, 0);
    UNTOUCHED();
    /* out shifted by one row inside a larger buffer that also holds out_b: overlap, not in place. */
    performer_tensor_t shifted = keys(&big, 1, N + 1), base = keys(&big, 0, N);
    expect_status("out overlaps out_b", performer_softmax_merge(&a.out, &a.lse, &base, &b.lse, &shifted, &r.lse),
                  PERFORMER_ERROR_ALIASING, "out");
    expect_status("lse is out", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &r.out),
                  PERFORMER_ERROR_SHAPE_MISMATCH, "lse");
    performer_tensor_t lse_in_out = r.out;
    lse_in_out.shape[3] = 1;
    expect_status("lse inside out", performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &lse_in_out),
                  PERFORMER_ERROR_ALIASING, "out");
    UNTOUCHED();
    fill_value(&a.lse, 0), fill_value(&b.lse, 0);
    OK(performer_softmax_merge(&a.out, &a.lse, &b.out, &b.lse, &r.out, &r.lse), "valid after the errors");
#undef UNTOUCHED
    free(wide.data), free(lse64.data), free(big.data);
    partial_free(&a), partial_free(&b), partial_free(&r);
}

int main(void) {
    for (int dtype = 0; dtype < 2; dtype++) merge_equals_whole(dtype), masked_rows(dtype);
    errors();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
