/* Regression tests of libperformer issue 13 (docs/RELIABILITY.md has the table): inputs that
 * once overflowed the heap, read wild or out-of-bounds memory, aborted the process, hung a
 * forked child, gave wrong results through partial aliasing, left idle workers spinning, or
 * dereferenced a handle that was destroyed, garbage or of another kind; and the later findings
 * (tiny calls that read the executor slot, decoder messages that named no argument; the forked
 * child's leak is caught by valgrind running fork_child, Tests/sanitizers/run.sh).
 * Each probe must now return a status with a message (nothing written) or work correctly.
 * Prints "N passed, M failed"; exits nonzero on any failure. */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A broadcast input: every element at one value (all strides 0). */
static performer_tensor_t broadcast_of(int dtype, void *one, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    t.data = one;
    t.dtype = dtype;
    t.shape[0] = s0; t.shape[1] = s1; t.shape[2] = s2; t.shape[3] = s3;
    return t;
}

static performer_tensor_t broadcast(float *one, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    return broadcast_of(PERFORMER_FLOAT32, one, s0, s1, s2, s3);
}

/* status is OUT_OF_MEMORY or SIZE_OVERFLOW, with a message. */
static void expect_too_large(const char *what, performer_status got) {
    CHECK(got == PERFORMER_ERROR_OUT_OF_MEMORY || got == PERFORMER_ERROR_SIZE_OVERFLOW,
          "%s: status %d (%s), want out of memory or size overflow; message \"%s\"", what, (int)got,
          performer_status_string(got), performer_last_error());
    CHECK(performer_last_error()[0] != '\0', "%s: no message", what);
}

/* ---- 1. Scratch sizes that wrap around 2^64: q, k broadcast with a huge head dim. */
static void scratch_overflow(void) {
    static const int64_t dims[] = {(int64_t)1 << 58, (int64_t)1 << 62, INT64_MAX - 3};
    float one = 0.5f;
    for (int i = 0; i < 3; i++) {
        int64_t d = dims[i];
        for (int64_t n = 1; n <= 80; n += 79) {  /* the few-query path and the tiled path */
            performer_tensor_t q = broadcast(&one, 1, 1, n, d), k = broadcast(&one, 1, 1, n, d);
            performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 1, n, 1);
            performer_tensor_t out = tensor_new(PERFORMER_FLOAT32, 1, 1, n, 1);
            fill_value(&out, SENTINEL);
            expect_too_large("softmax_forward, q and k broadcast, huge D",
                             performer_softmax_forward(&q, &k, &v, &out, NULL, NULL));
            CHECK(is_value(&out, SENTINEL), "softmax_forward D = %lld: out was written", (long long)d);
            performer_linear_options_t lo;
            performer_linear_options_init(&lo);
            for (int causal = 0; causal < 2; causal++) {
                lo.causal = causal;
                expect_too_large("linear_forward, q and k broadcast, huge D",
                                 performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &lo));
                CHECK(is_value(&out, SENTINEL), "linear_forward D = %lld: out was written", (long long)d);
            }
            free(v.data);
            free(out.data);
        }
    }
}

/* ---- 2. FAVOR+ states whose strides overflow: checked before any value is read. */
static void favor_wild_state(void) {
    performer_favor_projection_t p = NULL;
    CHECK(performer_favor_projection_create(&p, 4, 4, PERFORMER_PROJECTION_IID, PERFORMER_NORMS_CHI, 7) == PERFORMER_OK,
          "projection_create: %s", performer_last_error());
    if (!p) return;
    const int64_t B = 3, H = 1, N = 3, D = 4, M = 2, C = 4;  /* relu: C = m */
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = 1;
    o.features = PERFORMER_FAVOR_RELU;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, B, H, N, D), k = tensor_new(PERFORMER_FLOAT32, B, H, N, D);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, B, H, N, M), out = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    performer_tensor_t dout = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    performer_tensor_t dq = tensor_new(PERFORMER_FLOAT32, B, H, N, D), dk = tensor_new(PERFORMER_FLOAT32, B, H, N, D);
    performer_tensor_t dv = tensor_new(PERFORMER_FLOAT32, B, H, N, M);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, B, H, C, M), z = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    performer_tensor_t c = tensor_new(PERFORMER_FLOAT32, B, H, C, 1);
    fill_value(&out, SENTINEL);
    fill_value(&dq, SENTINEL);
    for (int which = 0; which < 3; which++) {
        performer_tensor_t bad[3] = {s, z, c};
        bad[which].strides[0] = INT64_MAX / 2 + 1;  /* (B - 1) * stride = 2^63 overflows */
        performer_status st = performer_favor_forward(&q, &k, &v, p, &out, &bad[0], &bad[1], &bad[2], NULL, NULL, NULL, &o);
        expect_status("favor_forward, a state stride that overflows", st, PERFORMER_ERROR_SIZE_OVERFLOW, "strides[0]");
        st = performer_favor_backward(&q, &k, &v, &dout, p, &dq, &dk, &dv, &bad[0], &bad[1], &bad[2], NULL, NULL, NULL, NULL, &o);
        expect_status("favor_backward, a state stride that overflows", st, PERFORMER_ERROR_SIZE_OVERFLOW, "strides[0]");
    }
    for (int which = 0; which < 2; which++) {
        performer_tensor_t bad[2] = {s, z};
        bad[which].strides[0] = INT64_MAX / 2 + 1;
        performer_status st = performer_favor_backward(&q, &k, &v, &dout, p, &dq, &dk, &dv, NULL, NULL, NULL,
                                                       &bad[0], &bad[1], NULL, NULL, &o);
        expect_status("favor_backward, a dS_N/dz_N stride that overflows", st, PERFORMER_ERROR_SIZE_OVERFLOW, "strides[0]");
    }
    CHECK(is_value(&out, SENTINEL) && is_value(&dq, SENTINEL), "an output was written");
    performer_tensor_t all[] = {q, k, v, out, dout, dq, dk, dv, s, z, c};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
}

/* ---- 3. kv_lengths is read only once the batch agrees across tensors. The one-entry array
 * ends a readable page, so a read past it is a SIGSEGV. */
static void kv_lengths_batch(void) {
    long page = sysconf(_SC_PAGESIZE);
    char *pages = mmap(NULL, (size_t)(2 * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(pages != MAP_FAILED, "mmap");
    if (pages == MAP_FAILED) return;
    CHECK(mprotect(pages + page, (size_t)page, PROT_NONE) == 0, "mprotect");
    int64_t *lengths = (int64_t *)(pages + page) - 1;
    *lengths = 2;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 5, 1, 2, 4), k = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 4);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 3), out = tensor_new(PERFORMER_FLOAT32, 5, 1, 2, 3);
    performer_softmax_options_t so;
    performer_softmax_options_init(&so);
    so.kv_lengths = lengths;
    expect_status("softmax_forward, q.shape[0] = 5 but k.shape[0] = 1, kv_lengths of 1",
                  performer_softmax_forward(&q, &k, &v, &out, NULL, &so), PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[0] = 1");
    performer_linear_options_t lo;
    performer_linear_options_init(&lo);
    lo.kv_lengths = lengths;
    expect_status("linear_forward, batch mismatch with kv_lengths",
                  performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &lo), PERFORMER_ERROR_SHAPE_MISMATCH,
                  "k.shape[0] = 1");
    performer_favor_projection_t p = NULL;
    performer_favor_projection_create(&p, 4, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 1);
    performer_favor_options_t fo;
    performer_favor_options_init(&fo);
    fo.kv_lengths = lengths;
    expect_status("favor_forward, batch mismatch with kv_lengths",
                  performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &fo),
                  PERFORMER_ERROR_SHAPE_MISMATCH, "k.shape[0] = 1");
    /* The output's batch differs (q, k, v agree): also before the read. */
    performer_tensor_t q1 = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 4);
    expect_status("softmax_forward, out.shape[0] = 5 but q.shape[0] = 1",
                  performer_softmax_forward(&q1, &k, &v, &out, NULL, &so), PERFORMER_ERROR_SHAPE_MISMATCH, "out.shape[0] = 5");
    /* Agreeing batches of 1: the single entry is read and used. */
    performer_tensor_t out1 = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 3);
    CHECK(performer_softmax_forward(&q1, &k, &v, &out1, NULL, &so) == PERFORMER_OK, "softmax with kv_lengths: %s",
          performer_last_error());
    /* An empty batch of 2^50: no copy of 2^50 entries is attempted in vain (no abort). */
    int64_t huge = (int64_t)1 << 50;
    performer_tensor_t eq = tensor_new(PERFORMER_FLOAT32, 1, 1, 0, 4), ek = tensor_new(PERFORMER_FLOAT32, 1, 1, 0, 4);
    performer_tensor_t ev = tensor_new(PERFORMER_FLOAT32, 1, 1, 0, 3), eo = tensor_new(PERFORMER_FLOAT32, 1, 1, 0, 3);
    eq.shape[0] = ek.shape[0] = ev.shape[0] = eo.shape[0] = huge;
    expect_status("softmax_forward, empty tensors with batch 2^50 and kv_lengths",
                  performer_softmax_forward(&eq, &ek, &ev, &eo, NULL, &so), PERFORMER_ERROR_OUT_OF_MEMORY, "kv_lengths");
    expect_status("linear_forward, empty tensors with batch 2^50 and kv_lengths",
                  performer_linear_forward(&eq, &ek, &ev, &eo, NULL, NULL, NULL, NULL, &lo), PERFORMER_ERROR_OUT_OF_MEMORY,
                  "kv_lengths");
    expect_status("favor_forward, empty tensors with batch 2^50 and kv_lengths",
                  performer_favor_forward(&eq, &ek, &ev, p, &eo, NULL, NULL, NULL, NULL, NULL, NULL, &fo),
                  PERFORMER_ERROR_OUT_OF_MEMORY, "kv_lengths");
    performer_tensor_t all[] = {q, k, v, out, q1, out1, eq, ek, ev, eo};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
    munmap(pages, (size_t)(2 * page));
}

/* ---- 4a. Empty tensors (M = 0) with strides that overflow when multiplied by an index:
 * an empty view has no elements, so its strides are never used. */
static void empty_large_strides(void) {
    const int64_t B = 3, H = 2, N = 5, D = 4;
    const int64_t big = INT64_MAX / 2;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, B, H, N, D), k = tensor_new(PERFORMER_FLOAT32, B, H, N, D);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, B, H, N, 0), out = tensor_new(PERFORMER_FLOAT32, B, H, N, 0);
    performer_tensor_t lse = tensor_new(PERFORMER_FLOAT32, B, H, N, 1);
    for (int axis = 0; axis < 3; axis++) v.strides[axis] = out.strides[axis] = big;
    for (int64_t i = 0; i < count_of(&q); i++) ((float *)q.data)[i] = ((float *)k.data)[i] = (float)value_at(1, i);
    CHECK(performer_softmax_forward(&q, &k, &v, &out, &lse, NULL) == PERFORMER_OK, "softmax_forward, empty v/out with huge strides: %s",
          performer_last_error());
    int finite = 1;
    FOR4(&lse) finite &= isfinite(at(&lse, i0, i1, i2, i3));
    CHECK(finite, "softmax_forward, M = 0: lse not finite");
    performer_linear_options_t lo;
    performer_linear_options_init(&lo);
    lo.causal = 1;
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, B, H, D, 0), z = tensor_new(PERFORMER_FLOAT32, B, H, D, 1);
    for (int axis = 0; axis < 3; axis++) s.strides[axis] = big;
    CHECK(performer_linear_forward(&q, &k, &v, &out, &s, &z, NULL, NULL, &lo) == PERFORMER_OK,
          "linear_forward, empty v/out/S0 with huge strides: %s", performer_last_error());
    performer_tensor_t dq = tensor_new(PERFORMER_FLOAT32, B, H, N, D), dk = tensor_new(PERFORMER_FLOAT32, B, H, N, D);
    performer_tensor_t dout = v, dv = out;
    CHECK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &lo) == PERFORMER_OK,
          "linear_backward, empty v/dout/dv with huge strides: %s", performer_last_error());
    performer_favor_projection_t p = NULL;
    performer_favor_projection_create(&p, D, 4, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 3);
    CHECK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == PERFORMER_OK,
          "favor_forward, empty v/out with huge strides: %s", performer_last_error());
    performer_favor_decoder_t dec = NULL;
    CHECK(performer_favor_decoder_create(&dec, p, PERFORMER_FLOAT32, B, H, 0, NULL) == PERFORMER_OK, "favor decoder M = 0: %s",
          performer_last_error());
    if (dec) {
        performer_tensor_t tq = position(&q, 0), tk = position(&k, 0), tv = position(&v, 0), to = position(&out, 0);
        CHECK(performer_favor_decoder_step(dec, &tq, &tk, &tv, &to) == PERFORMER_OK,
              "favor_decoder_step, empty v/out with huge strides: %s", performer_last_error());
        performer_favor_decoder_destroy(dec);
    }
    performer_favor_projection_destroy(p);
    performer_tensor_t all[] = {q, k, v, out, lse, s, z, dq, dk};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
}

/* ---- 4b. Requests that cannot be allocated: OUT_OF_MEMORY, never an abort. */
/* A zero-stride (broadcast) view whose shape asks for more scratch than memory holds: the
 * OUT_OF_MEMORY message names the arguments whose sizes set the scratch, and nothing is written.
 * (The fuzzer found the unnamed message; an empty call must not allocate at all.) */
static void scratch_failures_name_arguments(void) {
    static float one[1] = {0.5f};
    static uint16_t half_one[1] = {0x3f00};
    const int64_t wide = (int64_t)1 << 20;
    /* Linear attention, D = M = 2^20: a 4 TiB D×M state per head. */
    performer_tensor_t q = broadcast(one, 1, 1, 1, wide), k = q, v = q;
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, wide);
    memset(out.data, 0x5a, (size_t)wide * sizeof(float));
    expect_status("linear_forward, D = M = 2^20 broadcast", performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, NULL),
                  PERFORMER_ERROR_OUT_OF_MEMORY, "k.shape = [1, 1, 1, 1048576]");
    CHECK(((unsigned char *)out.data)[0] == 0x5a && ((unsigned char *)out.data)[(size_t)wide * sizeof(float) - 1] == 0x5a,
          "a failed linear_forward wrote out");
    /* The same sizes with no query and no state asked for: nothing to compute, OK. */
    performer_tensor_t q0 = broadcast(one, 1, 1, 0, wide), k0 = q0, v0 = q0, out0 = q0;
    CHECK(performer_linear_forward_with_denominators(&q0, &k0, &v0, &out0, NULL, NULL, NULL, NULL, NULL, NULL) == PERFORMER_OK,
          "linear_forward_with_denominators, N = L = 0, D = M = 2^20: %s", performer_last_error());
    /* Half-precision state call: its float32 copies of k, v (2^40 elements each) cannot exist. */
    performer_tensor_t hk = broadcast_of(PERFORMER_BFLOAT16, half_one, 1, 1, (int64_t)1 << 30, 1024);
    performer_tensor_t hv = broadcast_of(PERFORMER_BFLOAT16, half_one, 1, 1, (int64_t)1 << 30, 1);
    performer_tensor_t s = tensor_new(PERFORMER_FLOAT32, 1, 1, 1024, 1), z = tensor_new(PERFORMER_FLOAT32, 1, 1, 1024, 1);
    expect_status("linear_state, bfloat16 k of 2^40 elements broadcast",
                  performer_linear_state(&hk, &hv, NULL, NULL, &s, &z, NULL), PERFORMER_ERROR_OUT_OF_MEMORY,
                  "float32 copies of k, v");
    free(out.data);
    free(s.data);
    free(z.data);
}

static void allocation_failures(void) {
    performer_favor_projection_t p = NULL, small = NULL;
    expect_status("favor_projection_create 2^20 x 2^20 iid",
                  performer_favor_projection_create(&p, 1 << 20, 1 << 20, PERFORMER_PROJECTION_IID, PERFORMER_NORMS_CHI, 1),
                  PERFORMER_ERROR_OUT_OF_MEMORY, "projection W");
    expect_status("favor_projection_create 2^20 x 2^20 orthogonal",
                  performer_favor_projection_create(&p, 1 << 20, 1 << 20, PERFORMER_PROJECTION_ORTHOGONAL,
                                                    PERFORMER_NORMS_CHI, 1),
                  PERFORMER_ERROR_OUT_OF_MEMORY, "projection W");
    CHECK(p == NULL, "a failed create wrote the handle");
    double one = 0.25;
    performer_tensor_t w;
    memset(&w, 0, sizeof w);
    w.data = &one;
    w.dtype = PERFORMER_FLOAT64;
    w.shape[0] = w.shape[1] = 1;
    w.shape[2] = w.shape[3] = 1 << 20;
    expect_status("favor_projection_create_from_matrix, broadcast 2^20 x 2^20",
                  performer_favor_projection_create_from_matrix(&p, &w), PERFORMER_ERROR_OUT_OF_MEMORY, "projection W");
    CHECK(performer_favor_projection_create(&small, 8, 8, PERFORMER_PROJECTION_IID, PERFORMER_NORMS_CHI, 1) == PERFORMER_OK,
          "projection_create: %s", performer_last_error());
    performer_favor_decoder_t dec = NULL;
    expect_status("favor_decoder_create, batch 2^40",
                  performer_favor_decoder_create(&dec, small, PERFORMER_FLOAT32, (int64_t)1 << 40, 1, 1, NULL),
                  PERFORMER_ERROR_OUT_OF_MEMORY, "decoder state");
    CHECK(dec == NULL, "a failed decoder create wrote the handle");
    performer_favor_projection_destroy(small);
    scratch_failures_name_arguments();
}

/* ---- 5. fork(): the child of a parent that ran a multi-threaded call runs one too. */
static performer_status threaded_softmax(double *checksum) {
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 8, 128, 16), k = tensor_new(PERFORMER_FLOAT32, 1, 8, 128, 16);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 8, 128, 16), out = tensor_new(PERFORMER_FLOAT32, 1, 8, 128, 16);
    for (int64_t i = 0; i < count_of(&q); i++) {
        ((float *)q.data)[i] = (float)value_at(2, i);
        ((float *)k.data)[i] = (float)value_at(3, i);
        ((float *)v.data)[i] = (float)value_at(4, i);
    }
    performer_status st = performer_softmax_forward(&q, &k, &v, &out, NULL, NULL);
    double sum = 0;
    for (int64_t i = 0; i < count_of(&out); i++) sum += ((float *)out.data)[i] * (double)(i % 7 + 1);
    *checksum = sum;
    free(q.data); free(k.data); free(v.data); free(out.data);
    return st;
}

static void fork_child(void) {
    performer_set_num_threads(4);
    double parent = 0, again = 0;
    CHECK(threaded_softmax(&parent) == PERFORMER_OK, "parent call: %s", performer_last_error());
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);  /* a hang is a SIGALRM death, which the parent reports */
        double child = 0;
        int ok = threaded_softmax(&child) == PERFORMER_OK && child == parent;
        ok = ok && threaded_softmax(&child) == PERFORMER_OK && child == parent;
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0, "fork failed");
    if (pid > 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child: %s %d",
              WIFSIGNALED(status) ? "killed by signal" : "exit status",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    CHECK(threaded_softmax(&again) == PERFORMER_OK && again == parent, "parent after fork: %s", performer_last_error());
    performer_set_num_threads(0);
}

/* ---- 6. A FAVOR+ final state may only alias the initial state with the same layout. */
static void favor_in_place(void) {
    const int64_t B = 1, H = 3, N = 6, D = 4, M = 2, C = 8;
    performer_favor_projection_t p = NULL;
    performer_favor_projection_create(&p, D, C, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 5);
    performer_favor_options_t o;
    performer_favor_options_init(&o);
    o.causal = 1;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT64, B, H, N, D), k = tensor_new(PERFORMER_FLOAT64, B, H, N, D);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT64, B, H, N, M);
    for (int64_t i = 0; i < count_of(&q); i++) {
        ((double *)q.data)[i] = value_at(5, i);
        ((double *)k.data)[i] = value_at(6, i);
    }
    for (int64_t i = 0; i < count_of(&v); i++) ((double *)v.data)[i] = value_at(7, i);
    /* Initial state: the state after the first half, computed into separate buffers. */
    performer_tensor_t s0 = tensor_new(PERFORMER_FLOAT64, B, H, C, M), z0 = tensor_new(PERFORMER_FLOAT64, B, H, C, 1);
    performer_tensor_t c0 = tensor_new(PERFORMER_FLOAT64, B, H, C, 1);
    performer_tensor_t first = tensor_new(PERFORMER_FLOAT64, B, H, N, M);
    CHECK(performer_favor_forward(&q, &k, &v, p, &first, NULL, NULL, NULL, &s0, &z0, &c0, &o) == PERFORMER_OK,
          "favor_forward (first piece): %s", performer_last_error());
    /* Reference: the second piece with separate final buffers. */
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT64, B, H, N, M), ref = tensor_new(PERFORMER_FLOAT64, B, H, N, M);
    performer_tensor_t sn = tensor_new(PERFORMER_FLOAT64, B, H, C, M), zn = tensor_new(PERFORMER_FLOAT64, B, H, C, 1);
    performer_tensor_t cn = tensor_new(PERFORMER_FLOAT64, B, H, C, 1);
    CHECK(performer_favor_forward(&q, &k, &v, p, &ref, &s0, &z0, &c0, &sn, &zn, &cn, &o) == PERFORMER_OK,
          "favor_forward (reference): %s", performer_last_error());
    /* z_N one head after z0, in a buffer of H + 1 heads: refused, nothing written. */
    double *zbuf = calloc((size_t)((H + 1) * C), sizeof(double));
    memcpy(zbuf, z0.data, sizeof(double) * (size_t)(H * C));
    performer_tensor_t za = z0, zs = z0;
    za.data = zbuf;
    zs.data = zbuf + C;
    fill_value(&out, SENTINEL);
    expect_status("favor_forward, z_N shifted one head into z0", 
                  performer_favor_forward(&q, &k, &v, p, &out, &s0, &za, &c0, &sn, &zs, &cn, &o),
                  PERFORMER_ERROR_ALIASING, "z_N");
    CHECK(is_value(&out, SENTINEL), "a refused call wrote out");
    /* A transposed overlay of the same bytes (other strides): refused too. */
    performer_tensor_t st = s0;
    st.shape[2] = C; st.shape[3] = M;
    st.strides[2] = 1; st.strides[3] = C;
    expect_status("favor_forward, S_N over S0 with other strides",
                  performer_favor_forward(&q, &k, &v, p, &out, &s0, &z0, &c0, &st, &zn, &cn, &o),
                  PERFORMER_ERROR_ALIASING, "S_N");
    /* The same layout: accepted, and the same result as separate buffers. */
    performer_tensor_t s1 = s0, z1 = z0, c1 = c0;
    CHECK(performer_favor_forward(&q, &k, &v, p, &out, &s0, &z0, &c0, &s1, &z1, &c1, &o) == PERFORMER_OK,
          "favor_forward in place: %s", performer_last_error());
    double *r = doubles_of(&ref), *rs = doubles_of(&sn);
    CHECK(max_relative_error(&out, r, 1e-300) == 0, "in place: out differs from separate buffers");
    CHECK(max_relative_error(&s0, rs, 1e-300) == 0, "in place: S_N differs from separate buffers");
    free(r); free(rs); free(zbuf);
    performer_tensor_t all[] = {q, k, v, s0, z0, c0, first, out, ref, sn, zn, cn};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
    performer_favor_projection_destroy(p);
}

/* ---- 7. After a call at 64 threads, small calls at 2 threads are not slowed by the idle
 * workers (they once all woke and polled on every call: 0.06 s -> 5.7 s for 100 calls). */
static double small_calls(void) {
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 2, 128, 16), k = tensor_new(PERFORMER_FLOAT32, 1, 2, 128, 16);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 2, 128, 16), out = tensor_new(PERFORMER_FLOAT32, 1, 2, 128, 16);
    /* The best of 7 rounds: the shortest time is the one least disturbed by other processes
     * on a shared machine (a busy core delays each 2-thread call's wake-up). */
    double best;
    performer_status s = PERFORMER_OK;
    BEST_US_PER_CALL(best, 7, 100, s, performer_softmax_forward(&q, &k, &v, &out, NULL, NULL));
    CHECK(s == PERFORMER_OK, "small calls: %s", performer_last_error());
    free(q.data); free(k.data); free(v.data); free(out.data);
    return best * 100 * 1e-6; /* seconds for 100 calls */
}

static void idle_workers(void) {
    performer_set_num_threads(2);
    double before = small_calls();
    performer_set_num_threads(64);
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 64, 64, 16), k = tensor_new(PERFORMER_FLOAT32, 1, 64, 64, 16);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 64, 64, 16), out = tensor_new(PERFORMER_FLOAT32, 1, 64, 64, 16);
    CHECK(performer_softmax_forward(&q, &k, &v, &out, NULL, NULL) == PERFORMER_OK, "64 threads: %s", performer_last_error());
    performer_set_num_threads(2);
    double after = small_calls();
    printf("100 small calls at 2 threads: %.4f s before, %.4f s after a call at 64 threads\n", before, after);
    CHECK(after <= 3 * before + 0.02, "idle workers slow small calls: %.4f s -> %.4f s", before, after);
    performer_set_num_threads(0);
    free(q.data); free(k.data); free(v.data); free(out.data);
}

/* ---- 8. Handles that are not live handles of their kind: NULL, destroyed (use after destroy,
 * double destroy), garbage values (among them the address of a PROT_NONE page, which would
 * crash if dereferenced) and handles of another kind, for every function taking a handle.
 * Each call returns a status naming the argument and writes nothing; destroy ignores them.
 * Handles were retained Swift objects cast to pointers: each of these crashed or corrupted
 * the heap. */

/* What every output holds before a call: also a valid state for set_state (finite s, z, c). */
#define MARK 0.5

/* Deterministic values in [-1, 1) from `seed`. */
static void fill_seeded(performer_tensor_t *t, uint64_t seed) {
    int64_t i = 0;
    FOR4(t) set_at(t, i0, i1, i2, i3, value_at(seed, i++));
}

/* Tokens, states and outputs for decoders and projections with D = 4, m = 4 (positive
 * features, C = 4), M = 2, B = H = 1, one position. */
typedef struct {
    performer_tensor_t q, v, dq, out, s, z, c, w;
} handle_tensors;

static handle_tensors handle_tensors_new(void) {
    handle_tensors t;
    t.q = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 4);
    t.v = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    t.dq = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 4);
    t.out = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    t.s = tensor_new(PERFORMER_FLOAT32, 1, 1, 4, 2);
    t.z = tensor_new(PERFORMER_FLOAT32, 1, 1, 4, 1);
    t.c = tensor_new(PERFORMER_FLOAT32, 1, 1, 4, 1);
    t.w = tensor_new(PERFORMER_FLOAT64, 1, 1, 4, 4);
    fill_seeded(&t.q, 1);
    fill_seeded(&t.v, 2);
    return t;
}

static void handle_tensors_free(handle_tensors *t) {
    performer_tensor_t *all[] = {&t->q, &t->v, &t->dq, &t->out, &t->s, &t->z, &t->c, &t->w};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
}

static void handle_outputs_mark(handle_tensors *t) {
    performer_tensor_t *all[] = {&t->dq, &t->out, &t->s, &t->z, &t->c, &t->w};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fill_value(all[i], MARK);
}

/* The call returned `want`. An error (then the message has `needle`) wrote no output. The
 * calls that must succeed show that the other arguments are valid: an error comes from the
 * handle alone. */
static void expect_handle_call(const char *what, const char *fn, handle_tensors *t, performer_status got,
                               performer_status want, const char *needle) {
    char name[200];
    snprintf(name, sizeof name, "%s: %s", what, fn);
    if (want == PERFORMER_OK) {
        CHECK(got == PERFORMER_OK, "%s: %s", name, performer_last_error());
    } else {
        expect_status(name, got, want, needle);
        CHECK(is_value(&t->dq, MARK) && is_value(&t->out, MARK) && is_value(&t->s, MARK) && is_value(&t->z, MARK) &&
              is_value(&t->c, MARK) && is_value(&t->w, MARK), "%s: an output was written", name);
    }
    handle_outputs_mark(t);
}

/* Every function that takes a linear decoder (destroy aside). */
static void probe_linear_decoder(const char *what, performer_linear_decoder_t d, performer_status want,
                                 const char *needle) {
    handle_tensors t = handle_tensors_new();
    handle_outputs_mark(&t);
    expect_handle_call(what, "reset", &t, performer_linear_decoder_reset(d), want, needle);
    expect_handle_call(what, "step", &t, performer_linear_decoder_step(d, &t.q, &t.q, &t.v, &t.out), want, needle);
    expect_handle_call(what, "step_with_state", &t,
                       performer_linear_decoder_step_with_state(d, &t.q, &t.q, &t.v, &t.out, &t.s, &t.z), want, needle);
    expect_handle_call(what, "prefill", &t, performer_linear_decoder_prefill(d, &t.q, &t.q, &t.v, &t.out), want, needle);
    expect_handle_call(what, "get_state", &t, performer_linear_decoder_get_state(d, &t.s, &t.z), want, needle);
    expect_handle_call(what, "set_state", &t, performer_linear_decoder_set_state(d, &t.s, &t.z), want, needle);
    handle_tensors_free(&t);
}

/* Every function that takes a FAVOR+ decoder (destroy aside). */
static void probe_favor_decoder(const char *what, performer_favor_decoder_t d, performer_status want,
                                const char *needle) {
    handle_tensors t = handle_tensors_new();
    handle_outputs_mark(&t);
    expect_handle_call(what, "reset", &t, performer_favor_decoder_reset(d), want, needle);
    expect_handle_call(what, "step", &t, performer_favor_decoder_step(d, &t.q, &t.q, &t.v, &t.out), want, needle);
    expect_handle_call(what, "get_state", &t, performer_favor_decoder_get_state(d, &t.s, &t.z, &t.c), want, needle);
    expect_handle_call(what, "set_state", &t, performer_favor_decoder_set_state(d, &t.s, &t.z, &t.c), want, needle);
    handle_tensors_free(&t);
}

/* Every function that takes a projection (destroy aside), decoder_create included. */
static void probe_projection(const char *what, performer_favor_projection_t p, performer_status want,
                             const char *needle) {
    handle_tensors t = handle_tensors_new();
    handle_outputs_mark(&t);
    int64_t i64 = -7;
    uint64_t u64 = 7;
    performer_favor_projection_kind kind = (performer_favor_projection_kind)-7;
    performer_favor_norms norms = (performer_favor_norms)-7;
    performer_favor_decoder_t made = NULL;
    expect_handle_call(what, "redraw", &t, performer_favor_projection_redraw(p), want, needle);
    expect_handle_call(what, "get_matrix", &t, performer_favor_projection_get_matrix(p, &t.w), want, needle);
    expect_handle_call(what, "get_dim", &t, performer_favor_projection_get_dim(p, &i64), want, needle);
    expect_handle_call(what, "get_num_features", &t, performer_favor_projection_get_num_features(p, &i64), want, needle);
    expect_handle_call(what, "feature_count", &t, performer_favor_feature_count(p, PERFORMER_FAVOR_POSITIVE, &i64),
                       want, needle);
    if (want != PERFORMER_OK) CHECK(i64 == -7, "%s: an int64 getter wrote its value", what);
    expect_handle_call(what, "get_seed", &t, performer_favor_projection_get_seed(p, &u64), want, needle);
    expect_handle_call(what, "get_draw", &t, performer_favor_projection_get_draw(p, &u64), want, needle);
    if (want != PERFORMER_OK) CHECK(u64 == 7, "%s: a uint64 getter wrote its value", what);
    expect_handle_call(what, "get_kind", &t, performer_favor_projection_get_kind(p, &kind), want, needle);
    expect_handle_call(what, "get_norms", &t, performer_favor_projection_get_norms(p, &norms), want, needle);
    if (want != PERFORMER_OK) CHECK((int)kind == -7 && (int)norms == -7, "%s: get_kind or get_norms wrote", what);
    /* features: x = q, out = dq (B x H x N x C, C = 4); backward: dfeatures = q, dx = dq. */
    expect_handle_call(what, "favor_features", &t, performer_favor_features(&t.q, p, &t.dq, NULL), want, needle);
    expect_handle_call(what, "favor_features_backward", &t, performer_favor_features_backward(&t.q, p, &t.q, &t.dq, NULL),
                       want, needle);
    expect_handle_call(what, "favor_forward", &t,
                       performer_favor_forward(&t.q, &t.q, &t.v, p, &t.out, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                       want, needle);
    /* backward: dout = v; dq, dk into dq and w's first row would alias nothing, but w is
     * float64: dk gets a tensor of its own. */
    performer_tensor_t dk = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 4);
    fill_value(&dk, MARK);
    expect_handle_call(what, "favor_backward", &t,
                       performer_favor_backward(&t.q, &t.q, &t.v, &t.v, p, &t.dq, &dk, &t.out, NULL, NULL, NULL, NULL,
                                                NULL, NULL, NULL, NULL),
                       want, needle);
    if (want != PERFORMER_OK) CHECK(is_value(&dk, MARK), "%s: favor_backward wrote dk", what);
    free(dk.data);
    expect_handle_call(what, "favor_decoder_create", &t,
                       performer_favor_decoder_create(&made, p, PERFORMER_FLOAT32, 1, 1, 2, NULL), want, needle);
    if (want != PERFORMER_OK) CHECK(made == NULL, "%s: favor_decoder_create wrote a handle", what);
    performer_favor_decoder_destroy(made);
    handle_tensors_free(&t);
}

static performer_linear_decoder_t new_linear_decoder(void) {
    performer_linear_decoder_t d = NULL;
    CHECK(performer_linear_decoder_create(&d, PERFORMER_FLOAT32, 1, 1, 1, 4, 2, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6) ==
              PERFORMER_OK, "linear_decoder_create: %s", performer_last_error());
    return d;
}

static performer_favor_projection_t new_projection(void) {
    performer_favor_projection_t p = NULL;
    CHECK(performer_favor_projection_create(&p, 4, 4, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 3) ==
              PERFORMER_OK, "projection_create: %s", performer_last_error());
    return p;
}

static performer_favor_decoder_t new_favor_decoder(performer_favor_projection_t p) {
    performer_favor_decoder_t d = NULL;
    CHECK(performer_favor_decoder_create(&d, p, PERFORMER_FLOAT32, 1, 1, 2, NULL) == PERFORMER_OK,
          "favor_decoder_create: %s", performer_last_error());
    return d;
}

/* Values that are no handle: a PROT_NONE page (a dereference would crash), small integers,
 * all ones, a live heap block. */
static void garbage_values(void *page, void *heap, void *out[5]) {
    out[0] = page;
    out[1] = (char *)page + 64;
    out[2] = (void *)(uintptr_t)1;
    out[3] = (void *)~(uintptr_t)0;
    out[4] = heap;
}

#define NOT_LIVE(type) "is not a live " #type " (destroyed, or not a handle)"

static void handles(void) {
    const int64_t before = performer_live_handle_count();
    performer_favor_projection_t p = new_projection();
    performer_linear_decoder_t ld = new_linear_decoder();
    performer_favor_decoder_t fd = new_favor_decoder(p);
    if (!p || !ld || !fd) return;
    CHECK(performer_live_handle_count() == before + 3, "live handles: %lld, want %lld",
          (long long)performer_live_handle_count(), (long long)(before + 3));

    /* Live handles of the right kind: every call succeeds (the arguments below are valid). */
    probe_linear_decoder("live linear decoder", ld, PERFORMER_OK, "");
    probe_favor_decoder("live FAVOR+ decoder", fd, PERFORMER_OK, "");
    probe_projection("live projection", p, PERFORMER_OK, "");

    /* NULL. */
    probe_linear_decoder("NULL linear decoder", NULL, PERFORMER_ERROR_NULL_POINTER, "decoder is NULL");
    probe_favor_decoder("NULL FAVOR+ decoder", NULL, PERFORMER_ERROR_NULL_POINTER, "decoder is NULL");
    probe_projection("NULL projection", NULL, PERFORMER_ERROR_NULL_POINTER, "projection is NULL");

    /* Garbage values; destroy ignores them. */
    void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED, "mmap");
    if (page == MAP_FAILED) return;
    void *heap = malloc(64), *garbage[5];
    memset(heap, 0xab, 64);
    garbage_values(page, heap, garbage);
    for (int i = 0; i < 5; i++) {
        char what[80];
        snprintf(what, sizeof what, "garbage handle %d", i);
        probe_linear_decoder(what, (performer_linear_decoder_t)garbage[i], PERFORMER_ERROR_INVALID_ARGUMENT,
                             "decoder " NOT_LIVE(performer_linear_decoder_t));
        probe_favor_decoder(what, (performer_favor_decoder_t)garbage[i], PERFORMER_ERROR_INVALID_ARGUMENT,
                            "decoder " NOT_LIVE(performer_favor_decoder_t));
        probe_projection(what, (performer_favor_projection_t)garbage[i], PERFORMER_ERROR_INVALID_ARGUMENT,
                         "projection " NOT_LIVE(performer_favor_projection_t));
        performer_linear_decoder_destroy((performer_linear_decoder_t)garbage[i]);
        performer_favor_decoder_destroy((performer_favor_decoder_t)garbage[i]);
        performer_favor_projection_destroy((performer_favor_projection_t)garbage[i]);
    }
    CHECK(performer_live_handle_count() == before + 3, "garbage destroys changed the live handles");

    /* Handles of another kind; destroy of the wrong kind leaves the handle live. */
    probe_linear_decoder("FAVOR+ decoder as linear decoder", (performer_linear_decoder_t)fd,
                         PERFORMER_ERROR_INVALID_ARGUMENT,
                         "decoder is a performer_favor_decoder_t, not a performer_linear_decoder_t");
    probe_linear_decoder("projection as linear decoder", (performer_linear_decoder_t)p, PERFORMER_ERROR_INVALID_ARGUMENT,
                         "decoder is a performer_favor_projection_t, not a performer_linear_decoder_t");
    probe_favor_decoder("linear decoder as FAVOR+ decoder", (performer_favor_decoder_t)ld,
                        PERFORMER_ERROR_INVALID_ARGUMENT,
                        "decoder is a performer_linear_decoder_t, not a performer_favor_decoder_t");
    probe_favor_decoder("projection as FAVOR+ decoder", (performer_favor_decoder_t)p, PERFORMER_ERROR_INVALID_ARGUMENT,
                        "decoder is a performer_favor_projection_t, not a performer_favor_decoder_t");
    probe_projection("linear decoder as projection", (performer_favor_projection_t)ld, PERFORMER_ERROR_INVALID_ARGUMENT,
                     "projection is a performer_linear_decoder_t, not a performer_favor_projection_t");
    probe_projection("FAVOR+ decoder as projection", (performer_favor_projection_t)fd, PERFORMER_ERROR_INVALID_ARGUMENT,
                     "projection is a performer_favor_decoder_t, not a performer_favor_projection_t");
    performer_linear_decoder_destroy((performer_linear_decoder_t)p);
    performer_linear_decoder_destroy((performer_linear_decoder_t)fd);
    performer_favor_decoder_destroy((performer_favor_decoder_t)ld);
    performer_favor_decoder_destroy((performer_favor_decoder_t)p);
    performer_favor_projection_destroy((performer_favor_projection_t)ld);
    performer_favor_projection_destroy((performer_favor_projection_t)fd);
    CHECK(performer_live_handle_count() == before + 3, "destroys of the wrong kind changed the live handles");
    probe_linear_decoder("linear decoder after wrong-kind destroys", ld, PERFORMER_OK, "");
    probe_favor_decoder("FAVOR+ decoder after wrong-kind destroys", fd, PERFORMER_OK, "");
    probe_projection("projection after wrong-kind destroys", p, PERFORMER_OK, "");

    /* Use after destroy and double destroy, also once the slot has a new handle. A decoder
     * outlives the projection it was made from (it holds a copy of W). */
    performer_linear_decoder_destroy(ld);
    performer_favor_decoder_destroy(fd);
    performer_favor_projection_destroy(p);
    CHECK(performer_live_handle_count() == before, "live handles after destroy: %lld, want %lld",
          (long long)performer_live_handle_count(), (long long)before);
    for (int round = 0; round < 2; round++) {
        const char *when = round == 0 ? "destroyed" : "destroyed, slot reused";
        probe_linear_decoder(when, ld, PERFORMER_ERROR_INVALID_ARGUMENT, "decoder " NOT_LIVE(performer_linear_decoder_t));
        probe_favor_decoder(when, fd, PERFORMER_ERROR_INVALID_ARGUMENT, "decoder " NOT_LIVE(performer_favor_decoder_t));
        probe_projection(when, p, PERFORMER_ERROR_INVALID_ARGUMENT, "projection " NOT_LIVE(performer_favor_projection_t));
        performer_linear_decoder_destroy(ld);
        performer_favor_decoder_destroy(fd);
        performer_favor_projection_destroy(p);
        if (round == 0) {
            /* New handles take the freed slots: the old values must stay dead. */
            performer_favor_projection_t p2 = new_projection();
            performer_linear_decoder_t ld2 = new_linear_decoder();
            performer_favor_decoder_t fd2 = new_favor_decoder(p2);
            CHECK(p2 != p && (void *)ld2 != (void *)ld && (void *)fd2 != (void *)fd, "a new handle equals a destroyed one");
            probe_linear_decoder("new linear decoder", ld2, PERFORMER_OK, "");
            performer_favor_projection_destroy(p2);
            probe_favor_decoder("new FAVOR+ decoder, its projection destroyed", fd2, PERFORMER_OK, "");
            performer_linear_decoder_destroy(ld2);
            performer_favor_decoder_destroy(fd2);
        }
    }
    CHECK(performer_live_handle_count() == before, "double destroys changed the live handles");

    /* Create/destroy cycles: the table does not grow with them. */
    for (int i = 0; i < 1000; i++) {
        performer_linear_decoder_t d = new_linear_decoder();
        performer_linear_decoder_destroy(d);
        performer_linear_decoder_destroy(d);
    }
    CHECK(performer_live_handle_count() == before, "live handles after 1000 cycles: %lld, want %lld",
          (long long)performer_live_handle_count(), (long long)before);
    munmap(page, 4096);
    free(heap);
}

/* Threads creating, stepping and destroying decoders of their own at once, the table
 * growing and shrinking under them: every step gives the same bits as a decoder alone. */
typedef struct {
    const float *expected;
    int mismatches;
} handle_job;

static void *handle_worker(void *arg) {
    handle_job *job = arg;
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 4), v = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    fill_seeded(&q, 1);
    fill_seeded(&v, 2);
    for (int i = 0; i < 300; i++) {
        performer_linear_decoder_t d = NULL;
        if (performer_linear_decoder_create(&d, PERFORMER_FLOAT32, 1, 1, 1, 4, 2, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6) !=
            PERFORMER_OK) {
            job->mismatches++;
            continue;
        }
        for (int t = 0; t < 3; t++)
            if (performer_linear_decoder_step(d, &q, &q, &v, &out) != PERFORMER_OK ||
                memcmp(out.data, job->expected + 2 * t, 2 * sizeof(float)) != 0) job->mismatches++;
        performer_linear_decoder_destroy(d);
        if (performer_linear_decoder_reset(d) != PERFORMER_ERROR_INVALID_ARGUMENT) job->mismatches++;
    }
    free(q.data); free(v.data); free(out.data);
    return NULL;
}

static void handles_threads(void) {
    const int64_t before = performer_live_handle_count();
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 4), v = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    performer_tensor_t out = tensor_new(PERFORMER_FLOAT32, 1, 1, 1, 2);
    fill_seeded(&q, 1);
    fill_seeded(&v, 2);
    float expected[6];
    performer_linear_decoder_t d = new_linear_decoder();
    if (!d) return;
    for (int t = 0; t < 3; t++) {
        OK(performer_linear_decoder_step(d, &q, &q, &v, &out), "reference step");
        memcpy(expected + 2 * t, out.data, 2 * sizeof(float));
    }
    performer_linear_decoder_destroy(d);
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    handle_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i].expected = expected;
        jobs[i].mismatches = 0;
        pthread_create(&threads[i], NULL, handle_worker, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].mismatches == 0, "thread %d: %d failed or different steps", i, jobs[i].mismatches);
    }
    CHECK(performer_live_handle_count() == before, "live handles after the threads: %lld, want %lld",
          (long long)performer_live_handle_count(), (long long)before);
    free(q.data); free(v.data); free(out.data);
}

/* ---- 9. Numerics at extreme magnitudes (issue 13, item 9; docs/RELIABILITY.md). */

static int all_finite(const performer_tensor_t *t) {
    FOR4(t) if (!isfinite(at(t, i0, i1, i2, i3))) return 0;
    return 1;
}

/* 9a. Causal FAVOR+ at ‖x‖ ~ 100: the minimal case (D = m = 2, orthogonal chi seed 7,
 * v = 1) gave inf; the output of one key is v exactly, its dq, dk are 0 and dv = dout. Then
 * N = 130 rows of norm 1000 (float32): every output and gradient finite, each output inside
 * the range of the values its row sees. */
static void favor_extreme_norm(void) {
    performer_favor_projection_t p = NULL;
    OK(performer_favor_projection_create(&p, 2, 2, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 7), "create");
    for (int kind = 0; kind < 2; kind++) {
        for (int dtype = 0; dtype < 2; dtype++) {
            int dt = dtype ? PERFORMER_FLOAT64 : PERFORMER_FLOAT32;
            performer_tensor_t q = tensor_new(dt, 1, 1, 1, 2), k = tensor_new(dt, 1, 1, 1, 2), v = tensor_new(dt, 1, 1, 1, 1);
            performer_tensor_t out = tensor_new(dt, 1, 1, 1, 1), dout = tensor_new(dt, 1, 1, 1, 1);
            performer_tensor_t dq = tensor_new(dt, 1, 1, 1, 2), dk = tensor_new(dt, 1, 1, 1, 2), dv = tensor_new(dt, 1, 1, 1, 1);
            set_at(&q, 0, 0, 0, 0, -64.2554932); set_at(&q, 0, 0, 0, 1, 40.6247025);
            set_at(&k, 0, 0, 0, 0, 96.5603104); set_at(&k, 0, 0, 0, 1, -97.3792801);
            fill_value(&v, 1);
            fill_value(&dout, 0.75);
            performer_favor_options_t o;
            performer_favor_options_init(&o);
            o.causal = 1;
            o.features = kind ? PERFORMER_FAVOR_HYPERBOLIC : PERFORMER_FAVOR_POSITIVE;
            OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "favor forward");
            CHECK(fabs(at(&out, 0, 0, 0, 0) - 1) < 1e-6, "minimal case kind %d dtype %d: out %g, want 1", kind, dt,
                  at(&out, 0, 0, 0, 0));
            OK(performer_favor_backward(&q, &k, &v, &dout, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
               "favor backward");
            CHECK(all_finite(&dq) && all_finite(&dk) && fabs(at(&dq, 0, 0, 0, 0)) < 1e-3 && fabs(at(&dk, 0, 0, 0, 1)) < 1e-3,
                  "minimal case kind %d dtype %d: dq (%g, %g), dk (%g, %g), want 0", kind, dt, at(&dq, 0, 0, 0, 0),
                  at(&dq, 0, 0, 0, 1), at(&dk, 0, 0, 0, 0), at(&dk, 0, 0, 0, 1));
            CHECK(fabs(at(&dv, 0, 0, 0, 0) - 0.75) < 1e-6, "minimal case kind %d dtype %d: dv %g, want 0.75", kind, dt,
                  at(&dv, 0, 0, 0, 0));
            free(q.data); free(k.data); free(v.data); free(out.data); free(dout.data);
            free(dq.data); free(dk.data); free(dv.data);
        }
    }
    performer_favor_projection_destroy(p);

    const int64_t n = 130, d = 8, m = 16, mv = 4;
    OK(performer_favor_projection_create(&p, d, m, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 3), "create");
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d), k = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 2, n, mv), out = tensor_new(PERFORMER_FLOAT32, 1, 2, n, mv);
    performer_tensor_t dout = tensor_new(PERFORMER_FLOAT32, 1, 2, n, mv), dv = tensor_new(PERFORMER_FLOAT32, 1, 2, n, mv);
    performer_tensor_t dq = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d), dk = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d);
    fill_seeded(&v, 5);
    fill_seeded(&dout, 6);
    for (int t = 0; t < 2; t++) {
        performer_tensor_t *x = t ? &k : &q;
        for (int64_t h = 0; h < 2; h++) {
            for (int64_t i = 0; i < n; i++) {
                double norm = 0;
                for (int64_t c = 0; c < d; c++) {
                    double e = value_at(11 + (uint64_t)t, (h * n + i) * d + c);
                    set_at(x, 0, h, i, c, e);
                    norm += e * e;
                }
                for (int64_t c = 0; c < d; c++) set_at(x, 0, h, i, c, at(x, 0, h, i, c) * 1000 / sqrt(norm));
            }
        }
    }
    for (int kind = 0; kind < 2; kind++) {
        performer_favor_options_t o;
        performer_favor_options_init(&o);
        o.causal = 1;
        o.features = kind ? PERFORMER_FAVOR_HYPERBOLIC : PERFORMER_FAVOR_POSITIVE;
        OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "favor forward 1000");
        int outside = 0;
        for (int64_t h = 0; h < 2; h++) {
            for (int64_t i = 0; i < n; i++) {
                for (int64_t c = 0; c < mv; c++) {
                    double lo = INFINITY, hi = -INFINITY, y = at(&out, 0, h, i, c);
                    for (int64_t j = 0; j <= i; j++) { lo = fmin(lo, at(&v, 0, h, j, c)); hi = fmax(hi, at(&v, 0, h, j, c)); }
                    if (!(y >= lo - 1e-5 && y <= hi + 1e-5)) outside++;
                }
            }
        }
        CHECK(outside == 0, "norm 1000 kind %d: %d outputs non-finite or outside their values' range", kind, outside);
        OK(performer_favor_backward(&q, &k, &v, &dout, p, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &o),
           "favor backward 1000");
        CHECK(all_finite(&dq) && all_finite(&dk) && all_finite(&dv), "norm 1000 kind %d: non-finite gradients", kind);
    }
    performer_favor_projection_destroy(p);
    free(q.data); free(k.data); free(v.data); free(out.data); free(dout.data); free(dq.data); free(dk.data); free(dv.data);
}

/* 9b. Tiny but nonzero denominators: linear elu+1, eps = 0, q = (-100, ...) against one key
 * gives v exactly (was inf: phi(q) = e^-100 is subnormal in float32, or 0 in the vector
 * path); D = 2 (scalar) and D = 16 (vector), forward, decoder step and backward (finite).
 * A row that sees no key outputs 0 for eps = 0 and eps = 1e-45 (was NaN). */
static void tiny_denominators(void) {
    for (int64_t d = 2; d <= 16; d += 14) {
        for (int dtype = 0; dtype < 2; dtype++) {
            int dt = dtype ? PERFORMER_FLOAT64 : PERFORMER_FLOAT32;
            performer_tensor_t q = tensor_new(dt, 1, 1, 1, d), k = tensor_new(dt, 1, 1, 1, d), v = tensor_new(dt, 1, 1, 1, 3);
            performer_tensor_t out = tensor_new(dt, 1, 1, 1, 3), dout = tensor_new(dt, 1, 1, 1, 3);
            performer_tensor_t dq = tensor_new(dt, 1, 1, 1, d), dk = tensor_new(dt, 1, 1, 1, d), dv = tensor_new(dt, 1, 1, 1, 3);
            fill_value(&q, -100);
            fill_seeded(&k, 21);
            fill_seeded(&v, 22);
            fill_seeded(&dout, 23);
            performer_linear_options_t o;
            performer_linear_options_init(&o);
            o.eps = 0;
            for (int causal = 0; causal < 2; causal++) {
                o.causal = causal;
                OK(performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &o), "linear forward");
                double worst = 0;
                for (int c = 0; c < 3; c++) worst = fmax(worst, fabs(at(&out, 0, 0, 0, c) - at(&v, 0, 0, 0, c)));
                CHECK(worst < 1e-6, "linear q = -100, D = %lld, dtype %d, causal %d: out differs from v by %g",
                      (long long)d, dt, causal, worst);
                OK(performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL, NULL, NULL, &o),
                   "linear backward");
                /* One key: o = v, so dq = dk = 0 and dv = dout. */
                double dworst = 0;
                FOR4(&dq) dworst = fmax(dworst, fabs(at(&dq, i0, i1, i2, i3)));
                FOR4(&dk) dworst = fmax(dworst, fabs(at(&dk, i0, i1, i2, i3)));
                FOR4(&dv) dworst = fmax(dworst, fabs(at(&dv, i0, i1, i2, i3) - at(&dout, i0, i1, i2, i3)));
                CHECK(dworst < 1e-5, "linear q = -100, D = %lld, dtype %d, causal %d: gradients off by %g",
                      (long long)d, dt, causal, dworst);
            }
            performer_linear_decoder_t dec = NULL;
            OK(performer_linear_decoder_create(&dec, dt, 1, 1, 1, d, 3, PERFORMER_FEATURE_ELU_PLUS_ONE, 0), "decoder");
            OK(performer_linear_decoder_step(dec, &q, &k, &v, &out), "decoder step");
            double worst = 0;
            for (int c = 0; c < 3; c++) worst = fmax(worst, fabs(at(&out, 0, 0, 0, c) - at(&v, 0, 0, 0, c)));
            CHECK(worst < 1e-6, "linear decoder q = -100, D = %lld, dtype %d: out differs from v by %g", (long long)d, dt,
                  worst);
            performer_linear_decoder_destroy(dec);
            /* No visible key (kv_lengths = 0): 0 for eps = 0 and for a subnormal eps. */
            int64_t none = 0;
            o.causal = 0;
            o.kv_lengths = &none;
            fill_value(&q, 0.5);
            for (int e = 0; e < 2; e++) {
                o.eps = e ? 1e-45 : 0;
                fill_value(&out, 7);
                OK(performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, &o), "linear forward no keys");
                CHECK(is_value(&out, 0), "linear no keys, eps %g, dtype %d: out[0] = %g, want 0", o.eps, dt,
                      at(&out, 0, 0, 0, 0));
            }
            free(q.data); free(k.data); free(v.data); free(out.data); free(dout.data);
            free(dq.data); free(dk.data); free(dv.data);
        }
    }
    /* FAVOR+ with eps = 1e-45 and a row that sees no key: 0. */
    performer_favor_projection_t p = NULL;
    OK(performer_favor_projection_create(&p, 4, 4, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 1), "create");
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 4), k = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 4);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 2), out = tensor_new(PERFORMER_FLOAT32, 1, 1, 2, 2);
    fill_seeded(&q, 31); fill_seeded(&k, 32); fill_seeded(&v, 33);
    for (int kind = 0; kind < 4; kind++) {
        for (int causal = 0; causal < 2; causal++) {
            int64_t none = 0;
            performer_favor_options_t o;
            performer_favor_options_init(&o);
            o.features = kind;
            o.causal = causal;
            o.eps = 1e-45;
            o.kv_lengths = &none;
            fill_value(&out, 7);
            OK(performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, &o), "favor no keys");
            CHECK(is_value(&out, 0), "favor no keys, kind %d causal %d eps 1e-45: out[0] = %g, want 0", kind, causal,
                  at(&out, 0, 0, 0, 0));
        }
    }
    performer_favor_projection_destroy(p);
    free(q.data); free(k.data); free(v.data); free(out.data);
}

/* 9c. Softmax backward with scores ~ 1e9 (float32) / 1e19 (float64): the forward is finite and
 * so must dv be (|dv_j| <= sum_i |dout_i|); dq, dk, dv all finite. */
static void softmax_huge_scores(void) {
    for (int dtype = 0; dtype < 2; dtype++) {
        int dt = dtype ? PERFORMER_FLOAT64 : PERFORMER_FLOAT32;
        const int64_t n = 40, d = 4, m = 3;
        double magnitude = dtype ? 1e19 : 1e9;
        for (int causal = 0; causal < 2; causal++) {
            performer_tensor_t q = tensor_new(dt, 1, 1, n, d), k = tensor_new(dt, 1, 1, n, d), v = tensor_new(dt, 1, 1, n, m);
            performer_tensor_t out = tensor_new(dt, 1, 1, n, m), lse = tensor_new(dt, 1, 1, n, 1);
            performer_tensor_t dout = tensor_new(dt, 1, 1, n, m), dq = tensor_new(dt, 1, 1, n, d);
            performer_tensor_t dk = tensor_new(dt, 1, 1, n, d), dv = tensor_new(dt, 1, 1, n, m);
            fill_seeded(&q, 41); fill_seeded(&k, 42); fill_seeded(&v, 43); fill_seeded(&dout, 44);
            /* scores s = q.k / sqrt(D) ~ magnitude: scale q and k by sqrt(magnitude). */
            FOR4(&q) set_at(&q, i0, i1, i2, i3, at(&q, i0, i1, i2, i3) * sqrt(magnitude));
            FOR4(&k) set_at(&k, i0, i1, i2, i3, at(&k, i0, i1, i2, i3) * sqrt(magnitude));
            performer_softmax_options_t o;
            performer_softmax_options_init(&o);
            o.causal = causal;
            OK(performer_softmax_forward(&q, &k, &v, &out, &lse, &o), "softmax forward");
            CHECK(all_finite(&out) && all_finite(&lse), "softmax forward at %g not finite", magnitude);
            OK(performer_softmax_backward(&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv, &o), "softmax backward");
            double bound = 0;
            FOR4(&dout) bound += fabs(at(&dout, i0, i1, i2, i3));
            int bad = 0;
            FOR4(&dv) if (!(fabs(at(&dv, i0, i1, i2, i3)) <= bound)) bad++;
            CHECK(bad == 0 && all_finite(&dq) && all_finite(&dk),
                  "softmax backward at %g, dtype %d, causal %d: %d dv entries non-finite or above sum |dout| = %g, dq/dk finite %d/%d",
                  magnitude, dt, causal, bad, bound, all_finite(&dq), all_finite(&dk));
            free(q.data); free(k.data); free(v.data); free(out.data); free(lse.data); free(dout.data);
            free(dq.data); free(dk.data); free(dv.data);
        }
    }
}

/* 9d. Non-finite inputs are not checked (performer.h, Conventions: Numerics): status OK; the
 * outputs that depend on the element are unspecified, the others unaffected. Causal forward
 * of softmax, linear and FAVOR+ (float32, N = 150 over several chunks) with NaN, +inf or -inf
 * in one element of k, q or v at position p: rows before p (for v: before p's block of 64
 * rows, whose products multiply masked zeros by v) and the other head are bit-identical to
 * the run without it. */
static void nonfinite_inputs(void) {
    const int64_t n = 150, d = 8, m = 4;
    performer_favor_projection_t proj = NULL;
    OK(performer_favor_projection_create(&proj, d, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 2), "create");
    performer_tensor_t q = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d), k = tensor_new(PERFORMER_FLOAT32, 1, 2, n, d);
    performer_tensor_t v = tensor_new(PERFORMER_FLOAT32, 1, 2, n, m);
    performer_tensor_t base = tensor_new(PERFORMER_FLOAT32, 1, 2, n, m), out = tensor_new(PERFORMER_FLOAT32, 1, 2, n, m);
    fill_seeded(&q, 51); fill_seeded(&k, 52); fill_seeded(&v, 53);
    const double bad[3] = {NAN, INFINITY, -INFINITY};
    const int64_t positions[3] = {0, 70, 149};
    for (int fn = 0; fn < 3; fn++) {
        for (int which = 0; which < 3; which++) {
            performer_tensor_t *x = which == 0 ? &k : which == 1 ? &q : &v;
            for (int b = 0; b < 3; b++) {
                for (int pi = 0; pi < 3; pi++) {
                    int64_t p = positions[pi];
                    for (int pass = 0; pass < 2; pass++) {
                        performer_tensor_t *target = pass ? &out : &base;
                        double saved = at(x, 0, 1, p, 1);
                        if (pass) set_at(x, 0, 1, p, 1, bad[b]);
                        performer_status st;
                        if (fn == 0) {
                            performer_softmax_options_t o;
                            performer_softmax_options_init(&o);
                            o.causal = 1;
                            st = performer_softmax_forward(&q, &k, &v, target, NULL, &o);
                        } else if (fn == 1) {
                            performer_linear_options_t o;
                            performer_linear_options_init(&o);
                            o.causal = 1;
                            st = performer_linear_forward(&q, &k, &v, target, NULL, NULL, NULL, NULL, &o);
                        } else {
                            performer_favor_options_t o;
                            performer_favor_options_init(&o);
                            o.causal = 1;
                            st = performer_favor_forward(&q, &k, &v, proj, target, NULL, NULL, NULL, NULL, NULL, NULL, &o);
                        }
                        set_at(x, 0, 1, p, 1, saved);
                        CHECK(st == PERFORMER_OK, "non-finite fn %d: status %d (%s)", fn, (int)st, performer_last_error());
                    }
                    int changed = 0;
                    int64_t first = which == 2 ? p / 64 * 64 : p;  /* v: its block's rows too */
                    FOR4(&out) {
                        if (i1 == 1 && i2 >= first) continue;
                        double a = at(&out, i0, i1, i2, i3), e = at(&base, i0, i1, i2, i3);
                        if (memcmp(&a, &e, sizeof a) != 0) changed++;
                    }
                    CHECK(changed == 0, "fn %d (softmax, linear, favor), %s[0, 1, %lld, 1] = %g: %d outputs before it or "
                          "in the other head changed", fn, which == 0 ? "k" : which == 1 ? "q" : "v", (long long)p, bad[b], changed);
                }
            }
        }
    }
    performer_favor_projection_destroy(proj);
    free(q.data); free(k.data); free(v.data); free(base.data); free(out.data);
}

/* ---- Tiny calls run inline and never consult the executor slot: an installed executor's
 * num_threads and parallel_for are not called (each read of the slot takes its lock and,
 * with no chosen thread count, calls num_threads). linear_state and _state_backward once
 * asked for the thread count whatever their size. A large call then reaches the executor,
 * so the counting can fail. */
typedef struct { int counts, regions; } counting_host;

static int counting_num_threads(void *context) {
    ((counting_host *)context)->counts++;
    return 2;
}

static void counting_parallel_for(void *context, int n, performer_task_fn task, void *task_context) {
    ((counting_host *)context)->regions++;
    for (int i = 0; i < n; i++) task(task_context, i);
}

static void executor_inline(void) {
    /* No chosen count: the executor's num_threads is the count, so any read of it shows. */
    unsetenv("PERFORMER_NUM_THREADS");
    CHECK(performer_set_num_threads(0) == PERFORMER_OK, "set_num_threads(0)");
    counting_host host = {0, 0};
    performer_executor_t executor = {sizeof executor, &host, counting_num_threads, counting_parallel_for};
    CHECK(performer_set_executor(&executor) == PERFORMER_OK, "set_executor: %s", performer_last_error());
    const int64_t B = 1, H = 2, N = 4, D = 4, M = 4;
    const int T = PERFORMER_FLOAT32;
    performer_tensor_t q = tensor_new(T, B, H, N, D), k = tensor_new(T, B, H, N, D), v = tensor_new(T, B, H, N, M);
    performer_tensor_t out = tensor_new(T, B, H, N, M), lse = tensor_new(T, B, H, N, 1);
    performer_tensor_t dout = tensor_new(T, B, H, N, M), dq = tensor_new(T, B, H, N, D);
    performer_tensor_t dk = tensor_new(T, B, H, N, D), dv = tensor_new(T, B, H, N, M);
    performer_tensor_t s = tensor_new(T, B, H, D, M), z = tensor_new(T, B, H, D, 1);
    performer_tensor_t q1 = tensor_new(T, B, H, 1, D), k1 = tensor_new(T, B, H, 1, D);
    performer_tensor_t v1 = tensor_new(T, B, H, 1, M), out1 = tensor_new(T, B, H, 1, M);
    fill_value(&q, 0.25); fill_value(&k, 0.5); fill_value(&v, 1); fill_value(&dout, 1);
    fill_value(&q1, 0.25); fill_value(&k1, 0.5); fill_value(&v1, 1);
    const struct { const char *name; performer_status status; } calls[] = {
        {"softmax_forward", performer_softmax_forward(&q, &k, &v, &out, &lse, NULL)},
        {"softmax_backward", performer_softmax_backward(&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv, NULL)},
        {"linear_forward", performer_linear_forward(&q, &k, &v, &out, NULL, NULL, NULL, NULL, NULL)},
        {"linear_backward", performer_linear_backward(&q, &k, &v, &dout, &dq, &dk, &dv, NULL, NULL, NULL, NULL,
                                                      NULL, NULL, NULL)},
        {"linear_state", performer_linear_state(&k, &v, NULL, NULL, &s, &z, NULL)},
        {"linear_state_backward", performer_linear_state_backward(&k, &v, &s, &z, &dk, &dv, NULL, NULL, NULL)},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        CHECK(calls[i].status == PERFORMER_OK, "%s: %s", calls[i].name, performer_last_error());
    performer_linear_decoder_t ld = NULL;
    CHECK(performer_linear_decoder_create(&ld, T, B, H, H, D, M, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6) == PERFORMER_OK &&
          performer_linear_decoder_step(ld, &q1, &k1, &v1, &out1) == PERFORMER_OK,
          "linear decoder: %s", performer_last_error());
    performer_linear_decoder_destroy(ld);
    performer_favor_projection_t p = NULL;
    performer_favor_decoder_t fd = NULL;
    performer_tensor_t fs = tensor_new(T, B, H, 8, M), fz = tensor_new(T, B, H, 8, 1), fc = tensor_new(T, B, H, 8, 1);
    CHECK(performer_favor_projection_create(&p, D, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 3) ==
              PERFORMER_OK &&
          performer_favor_forward(&q, &k, &v, p, &out, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == PERFORMER_OK &&
          performer_favor_state(&k, &v, p, NULL, NULL, NULL, &fs, &fz, &fc, NULL) == PERFORMER_OK &&
          performer_favor_decoder_create(&fd, p, T, B, H, M, NULL) == PERFORMER_OK &&
          performer_favor_decoder_step(fd, &q1, &k1, &v1, &out1) == PERFORMER_OK,
          "favor calls: %s", performer_last_error());
    performer_favor_decoder_destroy(fd);
    performer_favor_projection_destroy(p);
    CHECK(host.counts == 0 && host.regions == 0,
          "tiny calls consulted the executor: num_threads called %d times, parallel_for %d", host.counts,
          host.regions);

    /* A large call (about 2^21 operations) asks the executor. */
    performer_tensor_t bq = tensor_new(T, 1, 4, 256, 16), bk = tensor_new(T, 1, 4, 256, 16);
    performer_tensor_t bv = tensor_new(T, 1, 4, 256, 16), bout = tensor_new(T, 1, 4, 256, 16);
    CHECK(performer_softmax_forward(&bq, &bk, &bv, &bout, NULL, NULL) == PERFORMER_OK, "large call: %s",
          performer_last_error());
    CHECK(host.counts > 0 && host.regions > 0, "the large call did not reach the executor (%d, %d)", host.counts,
          host.regions);
    CHECK(performer_set_executor(NULL) == PERFORMER_OK, "set_executor(NULL)");
    performer_tensor_t all[] = {q, k, v, out, lse, dout, dq, dk, dv, s, z, q1, k1, v1, out1, fs, fz, fc, bq, bk, bv, bout};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].data);
}

/* ---- Decoder create errors name the sizes the caller passed: the state is no argument
 * (overflow messages once said only "state.shape [...] has more elements than fit in 64 bits"). */
static void expect_named(const char *what, performer_status got, performer_status want, const char *const needles[]) {
    const char *message = performer_last_error();
    CHECK(got == want, "%s: status %d, want %d (\"%s\")", what, (int)got, (int)want, message);
    for (const char *const *needle = needles; *needle; needle++)
        CHECK(strstr(message, *needle) != NULL, "%s: \"%s\" does not contain \"%s\"", what, message, *needle);
    CHECK(strncmp(message, "state", 5) != 0, "%s: \"%s\" names the state first", what, message);
}

static void decoder_messages(void) {
    performer_linear_decoder_t ld = NULL;
    const int64_t big = (int64_t)1 << 32;
    expect_named("linear decoder, batch x heads overflows",
                 performer_linear_decoder_create(&ld, PERFORMER_FLOAT32, big, big, 1, 8, 8, PERFORMER_FEATURE_RELU, 0),
                 PERFORMER_ERROR_SIZE_OVERFLOW,
                 (const char *const[]){"batch = 4294967296", "heads = 4294967296", "dim = 8", "value_dim = 8", NULL});
    expect_named("linear decoder, dim x value_dim overflows",
                 performer_linear_decoder_create(&ld, PERFORMER_FLOAT64, 7, 1, 1, (int64_t)1 << 56,
                                                 ((int64_t)1 << 56) / 7 + 1, PERFORMER_FEATURE_RELU, 0),
                 PERFORMER_ERROR_SIZE_OVERFLOW, (const char *const[]){"batch = 7", "value_dim = ", NULL});
    expect_named("linear decoder, too large to allocate",
                 performer_linear_decoder_create(&ld, PERFORMER_FLOAT32, (int64_t)1 << 20, (int64_t)1 << 20, 1, 1, 1,
                                                 PERFORMER_FEATURE_RELU, 0),
                 PERFORMER_ERROR_OUT_OF_MEMORY, (const char *const[]){"batch = 1048576", "heads = 1048576", NULL});
    CHECK(ld == NULL, "a failed linear decoder create wrote the handle");
    performer_favor_projection_t p = NULL;
    CHECK(performer_favor_projection_create(&p, 4, 8, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 1) ==
          PERFORMER_OK, "projection: %s", performer_last_error());
    performer_favor_decoder_t fd = NULL;
    const int64_t g = (int64_t)1 << 30;
    expect_named("FAVOR+ decoder, overflows", performer_favor_decoder_create(&fd, p, PERFORMER_FLOAT32, g, g, g, NULL),
                 PERFORMER_ERROR_SIZE_OVERFLOW,
                 (const char *const[]){"batch = 1073741824", "heads = 1073741824", "value_dim = 1073741824", NULL});
    expect_named("FAVOR+ decoder, too large to allocate",
                 performer_favor_decoder_create(&fd, p, PERFORMER_FLOAT32, (int64_t)1 << 40, 1, 1, NULL),
                 PERFORMER_ERROR_OUT_OF_MEMORY, (const char *const[]){"batch = 1099511627776", NULL});
    CHECK(fd == NULL, "a failed FAVOR+ decoder create wrote the handle");
    performer_favor_projection_destroy(p);
}

/* ---- 17. Views whose negative strides reach below address 0. The projection calls and the
 * FAVOR+ decoder's state calls once checked a view's extent in elements only, not its
 * addresses, and wrote W through such a view (found by the fuzzer). data points into a
 * PROT_NONE page, so any access would crash; each call must refuse the view instead. */
static performer_tensor_t wrapping_view(void *page, int dtype, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    t.data = page;
    t.dtype = dtype;
    t.shape[0] = 1; t.shape[1] = 1; t.shape[2] = s2; t.shape[3] = s3;
    t.strides[0] = s2 * s3; t.strides[1] = s2 * s3; t.strides[2] = -((int64_t)1 << 50); t.strides[3] = 1;
    return t;
}

static void wrapping_views(void) {
    void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED, "mmap");
    static const int dtypes[] = {PERFORMER_FLOAT32, PERFORMER_FLOAT64, PERFORMER_FLOAT16, PERFORMER_BFLOAT16};
    performer_favor_projection_t p = new_projection(); /* m = D = 4 */
    for (int i = 0; i < 4; i++) {
        performer_tensor_t w = wrapping_view(page, dtypes[i], 4, 4);
        expect_status("get_matrix into a view below address 0", performer_favor_projection_get_matrix(p, &w),
                      PERFORMER_ERROR_SIZE_OVERFLOW, "out reaches outside the address space");
        performer_favor_projection_t q = (performer_favor_projection_t)(uintptr_t)0x5A5A;
        expect_status("create_from_matrix of a W below address 0", performer_favor_projection_create_from_matrix(&q, &w),
                      PERFORMER_ERROR_SIZE_OVERFLOW, "W reaches outside the address space");
        CHECK(q == (performer_favor_projection_t)(uintptr_t)0x5A5A, "create_from_matrix wrote the handle on error");
    }
    performer_favor_decoder_t d = new_favor_decoder(p); /* C = 4 features, M = 2 */
    float z[4] = {0}, c[4] = {0};
    performer_tensor_t s = wrapping_view(page, PERFORMER_FLOAT32, 4, 2);
    performer_tensor_t zt = wrapping_view(z, PERFORMER_FLOAT32, 4, 1), ct = wrapping_view(c, PERFORMER_FLOAT32, 4, 1);
    zt.strides[2] = ct.strides[2] = 1;
    expect_status("favor get_state into S below address 0", performer_favor_decoder_get_state(d, &s, &zt, &ct),
                  PERFORMER_ERROR_SIZE_OVERFLOW, "S reaches outside the address space");
    expect_status("favor set_state from S below address 0", performer_favor_decoder_set_state(d, &s, &zt, &ct),
                  PERFORMER_ERROR_SIZE_OVERFLOW, "S reaches outside the address space");
    performer_favor_decoder_destroy(d);
    performer_favor_projection_destroy(p);
    /* Each end of the view fits in 64 bits but the distance between them does not: out's
     * strides [2^40, 2^20, -1, 1] over [2^20, 2^20, 2^20, 1] reach 2^20 - 1 elements below data
     * and 2^60 - 2^20 above, 2^63 bytes of float64 in all (a softmax call wrote through such an
     * out; found by the fuzzer). */
    static double one = 1;
    const int64_t e = (int64_t)1 << 20;
    performer_tensor_t q = broadcast_of(PERFORMER_FLOAT64, &one, e, e, e, 1);
    performer_tensor_t k = broadcast_of(PERFORMER_FLOAT64, &one, e, 2, e, 1), v = k;
    performer_tensor_t out = broadcast_of(PERFORMER_FLOAT64, (char *)page + 2048, e, e, e, 1);
    out.strides[0] = (int64_t)1 << 40, out.strides[1] = e, out.strides[2] = -1, out.strides[3] = 1;
    expect_status("softmax_forward into an out spanning 2^63 bytes", performer_softmax_forward(&q, &k, &v, &out, NULL, NULL),
                  PERFORMER_ERROR_SIZE_OVERFLOW, "out spans more bytes than fit in 64 bits");
    munmap(page, 4096);
}

int main(int argc, char **argv) {
    /* Optional argument: run only the probe of that name (to see each one fail alone). */
    static const struct { const char *name; void (*run)(void); } probes[] = {
        {"scratch_overflow", scratch_overflow}, {"favor_wild_state", favor_wild_state},
        {"kv_lengths_batch", kv_lengths_batch}, {"empty_large_strides", empty_large_strides},
        {"allocation_failures", allocation_failures}, {"fork_child", fork_child},
        {"favor_in_place", favor_in_place}, {"idle_workers", idle_workers},
        {"handles", handles}, {"handles_threads", handles_threads},
        {"favor_extreme_norm", favor_extreme_norm}, {"tiny_denominators", tiny_denominators},
        {"softmax_huge_scores", softmax_huge_scores}, {"nonfinite_inputs", nonfinite_inputs},
        {"executor_inline", executor_inline}, {"decoder_messages", decoder_messages},
        {"wrapping_views", wrapping_views},
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        if (argc < 2 || strcmp(argv[1], probes[i].name) == 0) probes[i].run();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
