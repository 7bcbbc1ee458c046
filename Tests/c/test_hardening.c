/* Regression tests of libperformer issue 13 (docs/RELIABILITY.md has the table): inputs that
 * once overflowed the heap, read wild or out-of-bounds memory, aborted the process, hung a
 * forked child, gave wrong results through partial aliasing, or left idle workers spinning.
 * Each probe must now return a status with a message (nothing written) or work correctly.
 * Prints "N passed, M failed"; exits nonzero on any failure. */
#define _GNU_SOURCE
#include "test_support.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A broadcast input: every element at one float (all strides 0). */
static performer_tensor_t broadcast(float *one, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    performer_tensor_t t;
    memset(&t, 0, sizeof t);
    t.data = one;
    t.dtype = PERFORMER_FLOAT32;
    t.shape[0] = s0; t.shape[1] = s1; t.shape[2] = s2; t.shape[3] = s3;
    return t;
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
    double best = INFINITY;
    for (int round = 0; round < 3; round++) {
        double start = seconds();
        for (int i = 0; i < 100; i++) performer_softmax_forward(&q, &k, &v, &out, NULL, NULL);
        double t = seconds() - start;
        if (t < best) best = t;
    }
    free(q.data); free(k.data); free(v.data); free(out.data);
    return best;
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

int main(int argc, char **argv) {
    /* Optional argument: run only the probe of that name (to see each one fail alone). */
    static const struct { const char *name; void (*run)(void); } probes[] = {
        {"scratch_overflow", scratch_overflow}, {"favor_wild_state", favor_wild_state},
        {"kv_lengths_batch", kv_lengths_batch}, {"empty_large_strides", empty_large_strides},
        {"allocation_failures", allocation_failures}, {"fork_child", fork_child},
        {"favor_in_place", favor_in_place}, {"idle_workers", idle_workers},
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        if (argc < 2 || strcmp(argv[1], probes[i].name) == 0) probes[i].run();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
