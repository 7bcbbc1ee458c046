/* test_stress_threads.c: several threads call the ABI at once while the process-wide thread
 * count changes under them (1..4 workers per call): softmax forward and backward, causal linear
 * and FAVOR+ attention on a shared projection, and a linear and a FAVOR+ decoder per thread;
 * one more thread redraws a second projection and computes features on it. Every result must
 * equal, bit for bit, the one computed alone before the threads start (results never depend on
 * the thread count). Built against the ThreadSanitizer library too (Tests/sanitizers/tsan.sh),
 * where it is the race probe. Prints "N passed, M failed" last. */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>

enum { B = 2, H = 2, N = 48, D = 32, M = 32, F = 32, THREADS = 4, ROUNDS = 4, STEPS = 6 };
#define T PERFORMER_FLOAT32

typedef struct {
    performer_tensor_t q, k, v, dout;
    performer_tensor_t out, lse, dq, dk, dv, lin, fav, dec_lin, dec_fav;
} results;

static performer_favor_projection_t shared_projection, redrawn_projection;

static void inputs(results *r) {
    r->q = tensor_new(T, B, H, N, D); r->k = tensor_new(T, B, H, N, D);
    r->v = tensor_new(T, B, H, N, M); r->dout = tensor_new(T, B, H, N, M);
    int64_t i = 0;
    FOR4(&r->q) set_at(&r->q, i0, i1, i2, i3, value_at(1, i++));
    i = 0; FOR4(&r->k) set_at(&r->k, i0, i1, i2, i3, value_at(2, i++));
    i = 0; FOR4(&r->v) set_at(&r->v, i0, i1, i2, i3, value_at(3, i++));
    i = 0; FOR4(&r->dout) set_at(&r->dout, i0, i1, i2, i3, value_at(4, i++));
}

static void outputs(results *r) {
    r->out = tensor_new(T, B, H, N, M); r->lse = tensor_new(T, B, H, N, 1);
    r->dq = tensor_new(T, B, H, N, D); r->dk = tensor_new(T, B, H, N, D); r->dv = tensor_new(T, B, H, N, M);
    r->lin = tensor_new(T, B, H, N, M); r->fav = tensor_new(T, B, H, N, M);
    r->dec_lin = tensor_new(T, B, H, STEPS, M); r->dec_fav = tensor_new(T, B, H, STEPS, M);
}

/* Every call once; returns the number of calls that failed. */
static int compute(const results *in, results *r) {
    int bad = 0;
    performer_softmax_options_t so;
    performer_softmax_options_init(&so);
    so.causal = 1;
    bad += performer_softmax_forward(&in->q, &in->k, &in->v, &r->out, &r->lse, &so) != PERFORMER_OK;
    bad += performer_softmax_backward(&in->q, &in->k, &in->v, &r->out, &r->lse, &in->dout, &r->dq, &r->dk, &r->dv, &so) != PERFORMER_OK;
    performer_linear_options_t lo;
    performer_linear_options_init(&lo);
    lo.causal = 1;
    bad += performer_linear_forward(&in->q, &in->k, &in->v, &r->lin, NULL, NULL, NULL, NULL, &lo) != PERFORMER_OK;
    performer_favor_options_t fo;
    performer_favor_options_init(&fo);
    fo.causal = 1;
    bad += performer_favor_forward(&in->q, &in->k, &in->v, shared_projection, &r->fav, NULL, NULL, NULL, NULL, NULL, NULL, &fo) != PERFORMER_OK;
    performer_linear_decoder_t ld = NULL;
    performer_favor_decoder_t fd = NULL;
    bad += performer_linear_decoder_create(&ld, T, B, H, H, D, M, PERFORMER_FEATURE_ELU_PLUS_ONE, 1e-6) != PERFORMER_OK;
    bad += performer_favor_decoder_create(&fd, shared_projection, T, B, H, M, NULL) != PERFORMER_OK;
    for (int64_t i = 0; i < STEPS && ld && fd; i++) {
        performer_tensor_t q = position(&in->q, i), k = position(&in->k, i), v = position(&in->v, i);
        performer_tensor_t o1 = position(&r->dec_lin, i), o2 = position(&r->dec_fav, i);
        bad += performer_linear_decoder_step(ld, &q, &k, &v, &o1) != PERFORMER_OK;
        bad += performer_favor_decoder_step(fd, &q, &k, &v, &o2) != PERFORMER_OK;
    }
    performer_linear_decoder_destroy(ld);
    performer_favor_decoder_destroy(fd);
    return bad;
}

static int differs(const results *a, const results *b) {
    const performer_tensor_t *x[] = {&a->out, &a->lse, &a->dq, &a->dk, &a->dv, &a->lin, &a->fav, &a->dec_lin, &a->dec_fav};
    const performer_tensor_t *y[] = {&b->out, &b->lse, &b->dq, &b->dk, &b->dv, &b->lin, &b->fav, &b->dec_lin, &b->dec_fav};
    int n = 0;
    for (int i = 0; i < 9; i++) n += memcmp(x[i]->data, y[i]->data, (size_t)count_of(x[i]) * sizeof(float)) != 0;
    return n;
}

static void free_outputs(results *r) {
    performer_tensor_t *x[] = {&r->out, &r->lse, &r->dq, &r->dk, &r->dv, &r->lin, &r->fav, &r->dec_lin, &r->dec_fav};
    for (int i = 0; i < 9; i++) free(x[i]->data);
}

typedef struct {
    int index, failures, mismatches;
    const results *in, *reference;
} job;

static void *caller(void *arg) {
    job *j = arg;
    for (int round = 0; round < ROUNDS; round++) {
        performer_set_num_threads(1 + (j->index + round) % 4);
        results r;
        outputs(&r);
        j->failures += compute(j->in, &r);
        j->mismatches += differs(&r, j->reference);
        free_outputs(&r);
    }
    return NULL;
}

static void *redrawer(void *arg) {
    job *j = arg;
    performer_tensor_t x = tensor_new(T, 1, 2, 16, D), phi = tensor_new(T, 1, 2, 16, F);
    for (int round = 0; round < ROUNDS * 4; round++) {
        j->failures += performer_favor_projection_redraw(redrawn_projection) != PERFORMER_OK;
        j->failures += performer_favor_features(&x, redrawn_projection, &phi, NULL) != PERFORMER_OK;
    }
    free(x.data); free(phi.data);
    return NULL;
}

int main(void) {
    OK(performer_favor_projection_create(&shared_projection, D, F, PERFORMER_PROJECTION_ORTHOGONAL, PERFORMER_NORMS_CHI, 7), "projection");
    OK(performer_favor_projection_create(&redrawn_projection, D, F, PERFORMER_PROJECTION_IID, PERFORMER_NORMS_CHI, 8), "projection");
    results in, reference;
    inputs(&in);
    outputs(&reference);
    performer_set_num_threads(1);
    CHECK(compute(&in, &reference) == 0, "reference calls: %s", performer_last_error());
    pthread_t threads[THREADS + 1];
    job jobs[THREADS + 1];
    for (int i = 0; i <= THREADS; i++) {
        jobs[i] = (job){i, 0, 0, &in, &reference};
        pthread_create(&threads[i], NULL, i < THREADS ? caller : redrawer, &jobs[i]);
    }
    for (int i = 0; i <= THREADS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].failures == 0, "thread %d: %d calls failed", i, jobs[i].failures);
        CHECK(jobs[i].mismatches == 0, "thread %d: %d results differ from the single-threaded ones", i, jobs[i].mismatches);
    }
    performer_favor_projection_destroy(shared_projection);
    performer_favor_projection_destroy(redrawn_projection);
    CHECK(performer_live_handle_count() == 0, "live handles at the end: %lld", (long long)performer_live_handle_count());
    free_outputs(&reference);
    free(in.q.data); free(in.k.data); free(in.v.data); free(in.dout.data);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
