/*
 * performer.h — the C interface of libperformer.
 *
 * libperformer computes attention on the CPU, forward and backward:
 *   - exact softmax attention (tiled online softmax; no N x L buffer),
 *   - linear attention ("Transformers are RNNs": causal or not, with a carried state, and a
 *     token-by-token recurrent decoder),
 *   - FAVOR+ (Performer) random features for the softmax kernel: seeded projections, the
 *     feature maps and their gradients, FAVOR+ attention (bidirectional and causal, with
 *     carried states, forward and backward), a token-by-token decoder,
 * in float32 and float64, on strided rank-4 tensors, with its own worker threads.
 * The exact functions are specified in docs/ALGORITHMS.md.
 *
 * Contents
 *   1. Versions          compile-time macros and the library's own numbers
 *   2. Errors            status codes, their names, the last error message of a thread
 *   3. Tensors           performer_tensor_t, the strided view every function takes
 *   4. Runtime           worker threads, which kernel build (instruction set) runs
 *   5. Softmax attention options, forward, backward
 *   6. Linear attention  options, forward, backward (with states), the recurrent decoder
 *   7. FAVOR+            projections (handles), options, feature maps, FAVOR+ attention
 *                        (forward, backward, with states), the FAVOR+ decoder
 *
 * Conventions (they hold for every function below unless its comment says otherwise)
 *   - Errors. Every function that can fail returns a performer_status. On failure no output
 *     has been written (output buffers keep their previous contents), and
 *     performer_last_error() returns a message naming the argument and what was wrong,
 *     e.g. "k.shape[3] = 48 but q.shape[3] = 64 (head dim)". No input, however bad, aborts
 *     the process; arguments are checked before any memory they describe is touched. (Memory
 *     a valid-looking descriptor describes must exist: the library cannot check that.) A
 *     request too large to allocate (scratch, a projection, a decoder state) is
 *     PERFORMER_ERROR_OUT_OF_MEMORY; one whose size does not fit in 64 bits is
 *     PERFORMER_ERROR_SIZE_OVERFLOW or PERFORMER_ERROR_OUT_OF_MEMORY.
 *   - Tensors are passed as performer_tensor_t descriptors: a data pointer, a dtype, and
 *     rank-4 shape and strides counted in elements (not bytes). Any strides work, so a
 *     B x N x H x D buffer can be passed as B x H x N x D without a copy. An empty tensor
 *     (some shape[i] = 0) has no elements: its strides are never used, whatever they are.
 *   - Per-batch arrays in options (kv_lengths) are read only after every tensor of the call
 *     has been checked to have the same batch (shape[0]); then exactly B entries are read.
 *   - Options are structs whose first field is their size; fill them with the matching
 *     *_options_init() function, then change the fields you need. A size this version of the
 *     library does not know is rejected with PERFORMER_ERROR_UNSUPPORTED_VERSION.
 *   - Ownership. The caller owns every buffer and descriptor it passes; the library reads
 *     and writes them only during the call and keeps no pointer to them afterwards. Strings
 *     the library returns are owned by the library: never free them.
 *   - Handles (performer_linear_decoder_t, performer_favor_decoder_t,
 *     performer_favor_projection_t) are opaque values, not pointers: the library keeps a
 *     table of the live ones with their kind and looks every handle up there before using
 *     it; it never dereferences the value. A value that is not a live handle of the kind the
 *     argument expects (destroyed, never created, garbage, or a handle of another kind) gives
 *     PERFORMER_ERROR_INVALID_ARGUMENT naming the argument ("decoder is not a live
 *     performer_linear_decoder_t (destroyed, or not a handle)", "decoder is a
 *     performer_favor_projection_t, not a performer_linear_decoder_t"), NULL gives
 *     PERFORMER_ERROR_NULL_POINTER. A destroy function ignores NULL, a destroyed or unknown
 *     value and a handle of another kind (so a second destroy does nothing). A destroyed
 *     handle is recognized as such even after its slot of the table serves a new handle
 *     (until that slot has been reused 2^40 times). At most 2^24 handles live at once
 *     (create then fails with PERFORMER_ERROR_OUT_OF_MEMORY).
 *   - Threads. Every function may be called from many threads at once, on the same or on
 *     different tensors (outputs of concurrent calls must not overlap each other, just as they
 *     must not overlap the inputs of one call). A call blocks until its result is complete.
 *     Handles may be created, used and destroyed from many threads at once, each handle by
 *     the rules of its section; destroying a handle while another thread is inside a call
 *     on that same handle is undefined (the library does not wait for or detect it).
 *   - Environment. PERFORMER_NUM_THREADS (a positive integer) sets the default thread count;
 *     PERFORMER_ISA (portable, avx2 or avx512) forces a kernel build the CPU supports. Both
 *     are read once, at the library's first use.
 *   - Numerics. Finite inputs give finite outputs and gradients at any magnitude the dtype
 *     holds, equal to the mathematical value to rounding wherever that value is
 *     representable (float32 rounds q.k, |x|^2 and similar sums, so accuracy degrades with
 *     the size of those terms, as any float32 evaluation does); a result that is too large
 *     for the dtype is +-inf, one too small is 0 or subnormal. In particular: a denominator
 *     that is tiny but not 0 gives the quotient (never num * (1/den)); a row that sees no key
 *     outputs 0 for every eps >= 0; causal FAVOR+ is tested up to input norm 1000 in float32;
 *     softmax's recomputed probabilities are clamped to [0, 1] (at scores of ~1e9 in float32
 *     lse is rounded to more than log L), so |dv_j| <= sum_i |dout_i|. Non-finite inputs
 *     (NaN, +-inf in q, k, v, dout, out, lse, linear states) are not checked (that would cost a pass over
 *     every input): the call returns PERFORMER_OK, and every output that depends on such an
 *     element is unspecified (typically NaN or inf). The others are as without it: other
 *     batch entries and heads; in causal attention the rows before its position, except that a
 *     non-finite v_j may also reach the rows of its block of 64 (products multiply masked zeros
 *     by v). Non-finite options and projection matrices, and FAVOR+ states outside their
 *     contract, are refused (PERFORMER_ERROR_INVALID_ARGUMENT); linear states are data as above.
 *   - fork(). A child process may call the library, multi-threaded calls included, whatever
 *     the parent did before: the child starts without the parent's worker threads and
 *     creates its own on first need (see section 4).
 *
 * Causal masking is bottom-right aligned: query i (of N) sees key j (of L) iff
 * j <= i + (L - N), as in FlashAttention >= 2.1, so that with a cache of L keys and N new
 * queries the last query sees every key. PyTorch's scaled_dot_product_attention(is_causal=True)
 * is top-left aligned (j <= i); the two agree when N = L and differ otherwise.
 */
#ifndef PERFORMER_H
#define PERFORMER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================================
 * 1. Versions
 * ====================================================================================== */

#define PERFORMER_VERSION_MAJOR 0
#define PERFORMER_VERSION_MINOR 2
#define PERFORMER_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH, as performer_version() returns. */
#define PERFORMER_VERSION_NUMBER \
    (PERFORMER_VERSION_MAJOR * 10000 + PERFORMER_VERSION_MINOR * 100 + PERFORMER_VERSION_PATCH)
/** Incremented on every incompatible change of this header's types or functions. */
#define PERFORMER_ABI_VERSION 1

/** The library's version as MAJOR * 10000 + MINOR * 100 + PATCH (compare with
 *  PERFORMER_VERSION_NUMBER to detect a header/library mismatch). Cannot fail. */
int performer_version(void);

/** The library's version as "MAJOR.MINOR.PATCH". A static string: never NULL, never free it. */
const char *performer_version_string(void);

/** The library's ABI version. A caller that loads the library with dlopen should check that
 *  it equals the PERFORMER_ABI_VERSION it was compiled with before calling anything else:
 *  this function and performer_version*() keep their signatures in every ABI version. */
int performer_abi_version(void);

/* ======================================================================================
 * 2. Errors
 * ====================================================================================== */

/** Status codes. Values are stable; new codes are only appended. */
typedef enum performer_status {
    PERFORMER_OK = 0,
    PERFORMER_ERROR_NULL_POINTER = 1,        /* a required pointer was NULL */
    PERFORMER_ERROR_INVALID_ARGUMENT = 2,    /* an option or scalar is out of its domain */
    PERFORMER_ERROR_SHAPE_MISMATCH = 3,      /* tensor shapes disagree */
    PERFORMER_ERROR_DTYPE_MISMATCH = 4,      /* unsupported dtype, or dtypes that differ */
    PERFORMER_ERROR_SIZE_OVERFLOW = 5,       /* negative size, or sizes/strides overflow */
    PERFORMER_ERROR_ALIASING = 6,            /* an output overlaps an input, output or itself */
    PERFORMER_ERROR_OUT_OF_MEMORY = 7,       /* scratch memory could not be allocated */
    PERFORMER_ERROR_UNSUPPORTED_VERSION = 8, /* an options struct's size field is unknown */
    PERFORMER_ERROR_UNSUPPORTED_CPU = 9      /* the CPU lacks a requested instruction set */
} performer_status;

/** A short fixed description of a status code ("shape mismatch"), or "unknown status code"
 *  for a value that is no performer_status. A static string: never NULL, never free it. */
const char *performer_status_string(performer_status status);

/** The message of the last failed call on the calling thread ("k.shape[3] = 48 but
 *  q.shape[3] = 64 (head dim)"), or "" when no call on this thread has failed. Successful
 *  calls leave it unchanged, so read it right after the call that failed. Never NULL; the
 *  text belongs to the thread and stays valid until that thread's next failing call or its
 *  exit. Messages are at most 511 bytes (longer ones are truncated). */
const char *performer_last_error(void);

/* ======================================================================================
 * 3. Tensors
 * ====================================================================================== */

typedef enum performer_dtype {
    PERFORMER_FLOAT32 = 0,
    PERFORMER_FLOAT64 = 1,
    /* Appended: half-precision storage, computed in float32 (see below). */
    PERFORMER_FLOAT16 = 2,  /* IEEE 754 binary16 */
    PERFORMER_BFLOAT16 = 3  /* bfloat16: the top 16 bits of a float32 */
} performer_dtype;

/** Half precision (PERFORMER_FLOAT16, PERFORMER_BFLOAT16) is a storage format: inputs and
 *  outputs are in the half type, but every sum (scores, softmax statistics, P.V, all gradient
 *  sums across key blocks and heads) is accumulated in float32 and each output element is
 *  rounded once, to nearest with ties to even, when written (a NaN stays a NaN; a value past
 *  the type's largest finite value becomes +-infinity). The row log-sum-exp of a half call is a
 *  float32 tensor, and so are the states (S, z; S~, z~, c), their gradients and the linear
 *  denominators. Scores and states are float32, so a large q.k or a state past the half
 *  type's range does not overflow even in float16. A decoder created with a half dtype takes
 *  its tokens (q, k, v, out) in that type and keeps its state in float32: get_state,
 *  set_state and step_with_state take float32 state tensors.
 *  Half tensors are accepted by performer_softmax_forward/_backward, performer_softmax_merge
 *  (out in the half type, lse float32), performer_linear_forward
 *  (_with_denominators)/_backward, performer_linear_state(_backward),
 *  performer_linear_initial_state_gradient,
 *  performer_favor_forward(_with_row_scales)/_backward, performer_favor_state(_backward),
 *  performer_favor_features(_backward), the linear and FAVOR+ decoders, and the projection's
 *  create_from_matrix (a half W, widened exactly) and get_matrix (the float32 W rounded once).
 *  See docs/HALF_PRECISION.md. */

/** A rank-4 strided view of caller-owned memory. Element (i0, i1, i2, i3) is at
 *  ((T *)data)[i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]],
 *  where T is float (PERFORMER_FLOAT32), double (PERFORMER_FLOAT64) or a 16-bit type
 *  (PERFORMER_FLOAT16: _Float16 / IEEE binary16; PERFORMER_BFLOAT16: uint16_t bit patterns).
 *
 *  - data must be aligned to sizeof(T); it may be NULL only when some shape[i] is 0.
 *  - shape[i] >= 0. Strides may be negative or zero for inputs (a zero stride broadcasts);
 *    outputs must not map two indices to one element. The byte span of every tensor must be
 *    representable in 64 bits (else PERFORMER_ERROR_SIZE_OVERFLOW).
 *  - reserved must be 0 (it may get a meaning in a later version).
 *  All tensors of one call must have the same dtype, except the float32 lse, states, state
 *  gradients and denominators of a half call. */
typedef struct performer_tensor_t {
    void *data;
    int32_t dtype;        /* a performer_dtype */
    int32_t reserved;     /* must be 0 */
    int64_t shape[4];
    int64_t strides[4];   /* in elements */
} performer_tensor_t;

/* ======================================================================================
 * 4. Runtime: threads and kernels
 * ====================================================================================== */

/** Bounds the worker threads later calls use (the calling thread included) to n, 1..1024;
 *  0 restores the default: PERFORMER_NUM_THREADS from the environment, else the count of an
 *  installed executor (performer_set_executor), else the CPUs this process may run on. Process-wide; calls already running keep their thread count.
 *  Returns PERFORMER_ERROR_INVALID_ARGUMENT (and changes nothing) for n < 0 or n > 1024.
 *  Worker threads are created on demand and live until the process exits; the library is
 *  marked not unloadable (dlclose leaves it mapped) so that they never outlive their code.
 *  Between calls a worker polls for new work for up to 100 microseconds before it sleeps
 *  (so back-to-back small calls, as in decoding, skip a wake-up); idle, it uses no CPU.
 *  PERFORMER_SPIN_US (read once, 0..1000000) sets that time; 0 sleeps at once. Only the
 *  workers a call uses are woken and poll: after a call at many threads, calls at fewer
 *  threads leave the other workers asleep.
 *  Calls whose arithmetic is tiny (below about 5e5 floating-point operations, e.g. one
 *  decoding step of a few heads) run on the calling thread alone, whatever n is: handing
 *  them to workers would cost more than it saves. Results never depend on the thread count.
 *  fork(): the child of a process that ran multi-threaded calls has none of its workers
 *  (fork copies only the calling thread). A pthread_atfork handler resets the library's
 *  thread pool in the child, which then starts workers of its own when a call needs them;
 *  the parent's pool is unaffected. Calls in progress on other threads at the moment of
 *  fork() do not continue in the child. */
performer_status performer_set_num_threads(int n);

/** The number of threads calls use now (at least 1): the count set with
 *  performer_set_num_threads (or PERFORMER_NUM_THREADS) when there is one, else the
 *  executor's num_threads when an executor is installed, else the CPUs this process may run on. */
int performer_get_num_threads(void);

/** One share of a call's parallel work: performer_executor_t.parallel_for must call
 *  task(task_context, i) once for every i in 0 .. n-1. */
typedef void (*performer_task_fn)(void *task_context, int index);

/** A host's thread pool, on which the library then runs its parallel work instead of on its
 *  own workers (the model is oneDNN's threadpool interop). Its purpose: in a process whose
 *  own pool (e.g. PyTorch's OpenMP threads) keeps its workers spinning between parallel
 *  regions, a second pool competes with them for the same cores; running the library's
 *  tasks on the host's pool hands the work to the threads already waiting for work.
 *    size          sizeof(performer_executor_t) (the struct may grow at its end)
 *    context       passed to both functions
 *    num_threads   the threads the host would run a parallel region on now (>= 1; larger
 *                  values are capped at 1024); read at the start of every call that is not
 *                  tiny unless a count was set with performer_set_num_threads (or
 *                  PERFORMER_NUM_THREADS), which then wins. May be NULL: the library's
 *                  default count is used.
 *    parallel_for  runs task(task_context, i) once for each i in 0 .. n-1 (n >= 2) and returns
 *                  when all have returned. Any degree of concurrency is correct, running them
 *                  one after another included (then just slower); the tasks never wait for one
 *                  another, take no locks the host could hold, and are done when they return.
 *                  It is called from the thread that called the library, possibly from several
 *                  such threads at once, never from inside a task. Must not be NULL.
 *  Calls whose work is tiny still run on the calling thread alone (see above): they call
 *  neither function and do not take the lock that guards the installed executor. */
typedef struct performer_executor_t {
    size_t size;
    void *context;
    int (*num_threads)(void *context);
    void (*parallel_for)(void *context, int n, performer_task_fn task, void *task_context);
} performer_executor_t;

/** Installs *executor (copied; the functions and context must stay valid until another
 *  executor or NULL is installed and the calls started before have returned) for every later
 *  call in the process; NULL goes back to the library's own worker threads. Calls already
 *  running finish on the executor they started with. Errors (nothing changes):
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION  executor->size is not a size this library knows
 *    PERFORMER_ERROR_NULL_POINTER         executor->parallel_for is NULL */
performer_status performer_set_executor(const performer_executor_t *executor);

/** The kernel build every call uses: "portable" (baseline x86-64, any CPU), "avx2"
 *  (x86-64-v3: AVX2 + FMA) or "avx512" (x86-64-v4). Chosen at first use as the fastest one
 *  the CPU supports, or the one PERFORMER_ISA names if the CPU supports it; a build the CPU
 *  lacks is never run. Worth quoting in bug reports. A static string: never NULL. */
const char *performer_kernel_isa(void);

/** The number of live handles (decoders and projections created and not yet destroyed) in
 *  the process, of every kind: for leak checks. Cannot fail. */
int64_t performer_live_handle_count(void);

/* ======================================================================================
 * 5. Exact softmax attention
 *
 *   out = softmax(scale * q k^T + mask) v
 *   q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M, out: B x H x N x M,
 *   lse: B x H x N x 1 (the row log-sum-exp of the scaled, masked scores).
 *   Hk must divide H; query head h reads key head h / (H / Hk) (grouped-query attention).
 *   D >= 1 and Hk >= 1; B, H, N, L, M may be 0 (then there is nothing to compute).
 *
 *   Masks: causal (bottom-right aligned, see the top of this file: query i sees key j iff
 *   j <= i + (L - N)), per-batch key lengths and per-batch key starts (left padding): query
 *   i of batch row b sees key j iff kv_starts[b] <= j < kv_lengths[b] and, when causal,
 *   j <= i + (L - N) in the original key indices. Masked keys get dk = dv = 0; keys before
 *   kv_starts[b] cost no time. A query row that sees no key gets output 0, lse -infinity,
 *   and zero gradients (never NaN).
 *   Memory: O((N + L) * D) scratch per thread beyond the arguments, at any N and L; the
 *   backward of grouped heads (H > Hk) whose B*Hk key heads do not spread evenly over the
 *   threads adds a dK, dV per query head past the first of each group: (H/Hk - 1) * B * Hk *
 *   L * (D + M) elements in all.
 * ====================================================================================== */

typedef struct performer_softmax_options_t {
    size_t size;                /* sizeof(performer_softmax_options_t) */
    int causal;                 /* nonzero: query i sees key j iff j <= i + (L - N) */
    int has_scale;              /* nonzero: use `scale`; zero: 1 / sqrt(D) */
    double scale;               /* must be finite when has_scale is set; ignored otherwise */
    const int64_t *kv_lengths;  /* NULL, or B key lengths in 0..L: keys j >= kv_lengths[b] are masked */
    /* Appended: a struct of the older size, ending at kv_lengths, is still accepted (no starts). */
    const int64_t *kv_starts;   /* NULL, or B key starts in 0..L, each <= its row's length (L without
                                   kv_lengths): keys j < kv_starts[b] are masked (left padding) */
} performer_softmax_options_t;

/** Fills *options with the defaults: size = sizeof(performer_softmax_options_t), not causal,
 *  scale 1/sqrt(D), no key lengths, no key starts. Does nothing when options is NULL. */
void performer_softmax_options_init(performer_softmax_options_t *options);

/** Forward: writes out (B x H x N x M) and, when lse is not NULL, lse (B x H x N x 1).
 *  `options` may be NULL (the defaults).
 *  Half precision: q, k, v and out may be PERFORMER_FLOAT16 or PERFORMER_BFLOAT16 (all four
 *  the same); lse is then PERFORMER_FLOAT32. They are widened to float32 scratch (O(B*H*N*D),
 *  never N x L), the float32 kernels run, and out is rounded once.
 *
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        q, k, v or out is NULL, or a non-empty tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, or differs from q's
 *                                        (lse: is not float32 in a half call)
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      shapes disagree (see above), Hk does not divide H, D = 0
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, non-finite scale,
 *                                        kv_lengths[b] or kv_starts[b] outside 0..L,
 *                                        kv_starts[b] > kv_lengths[b]
 *    PERFORMER_ERROR_ALIASING            out or lse overlaps q, k, v, each other, or itself
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION options->size is not a size this library knows
 *    PERFORMER_ERROR_OUT_OF_MEMORY       scratch memory could not be allocated */
performer_status performer_softmax_forward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_tensor_t *out, performer_tensor_t *lse, const performer_softmax_options_t *options);

/** Backward: given the forward's out and lse (both required) and dout = dLoss/dout
 *  (B x H x N x M), writes dq (q's shape), dk (k's shape) and dv (v's shape). Pass the same
 *  options as to the forward. P is recomputed from lse; no N x L matrix is stored. With
 *  grouped-query attention, dk and dv sum over the query heads sharing a key head.
 *  Half precision: q, k, v, out, dout, dq, dk, dv all PERFORMER_FLOAT16 or all
 *  PERFORMER_BFLOAT16, lse PERFORMER_FLOAT32 (as the half forward writes it); the gradients
 *  are summed in float32 and rounded once.
 *  Errors: as performer_softmax_forward (every pointer is required; dq, dk and dv must not
 *  overlap any argument or each other); nothing is written on error. */
performer_status performer_softmax_backward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *out, const performer_tensor_t *lse, const performer_tensor_t *dout,
    performer_tensor_t *dq, performer_tensor_t *dk, performer_tensor_t *dv,
    const performer_softmax_options_t *options);

/** Merging partial softmax results (ring attention, keys split across processes or calls).
 *  Given out_a, lse_a: the forward's out and lse of the queries against key set A, and
 *  out_b, lse_b: the same queries against a disjoint key set B, writes the result against
 *  A and B together:
 *    lse = log(exp(lse_a) + exp(lse_b)),
 *    out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b      (row by row).
 *  Shapes: out_a, out_b, out: B x H x N x M; lse_a, lse_b, lse: B x H x N x 1; any strides,
 *  all of one dtype (float32 or float64; the weights are computed in double), or out_a,
 *  out_b, out all PERFORMER_FLOAT16 or all PERFORMER_BFLOAT16 with lse_a, lse_b, lse
 *  PERFORMER_FLOAT32 (as the half forward writes its lse): each out element is then the
 *  float32 merge of the widened rows, rounded once (no scratch either). The operation
 *  is associative and commutative up to rounding, so any number of partial results can be
 *  folded in any order. A side whose lse is -infinity saw no key: it adds nothing and its out
 *  row is not read; a row that is -infinity on both sides gets out 0 and lse -infinity, never
 *  NaN. out and lse may be written over out_a/lse_a or out_b/lse_b (the same data pointer,
 *  shape and strides); any other overlap is refused. Single-threaded: O(B*H*N*M), no scratch.
 *
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        an argument is NULL, or a non-empty tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, or differs from out_a's
 *                                        (an lse: is not float32 when out_a is half)
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      a shape differs from out_a's (B x H x N x 1 for the lse)
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, an lse_a or lse_b
 *                                        value that is NaN or +infinity
 *    PERFORMER_ERROR_ALIASING            out or lse overlaps an input other than in place, each
 *                                        other, or itself */
performer_status performer_softmax_merge(
    const performer_tensor_t *out_a, const performer_tensor_t *lse_a,
    const performer_tensor_t *out_b, const performer_tensor_t *lse_b,
    performer_tensor_t *out, performer_tensor_t *lse);

/* ======================================================================================
 * 6. Linear attention ("Transformers are RNNs", docs/ALGORITHMS.md section 2)
 *
 *   phi is the feature map, applied to each row of q and k; C = D for every built-in map.
 *   Non-causal: S = S_0 + sum_j phi(k_j) v_j^T (C x M), z = z_0 + sum_j phi(k_j) (C),
 *               out_i = phi(q_i)^T S / (phi(q_i)^T z + eps).
 *   Causal:     the same with S_i, z_i summed over j <= i only (N must equal L).
 *   Both start from an initial state (S_0, z_0) when one is given (else zeros). With
 *   options->normalize = 0 the output is the numerator phi(q_i)^T S_i alone.
 *
 *   q: B x H x N x D, k: B x Hk x L x D, v: B x Hk x L x M, out: B x H x N x M.
 *   Hk must divide H; query head h reads key head h / (H / Hk) (grouped-query attention).
 *   D >= 1 and Hk >= 1; B, H, N, L, M may be 0 (then there is nothing to compute).
 *
 *   State: S is B x H x C x M and z is B x H x C x 1, one pair per QUERY head.
 *   With Hk < H every query head of a group keeps its own state: the heads add the same keys
 *   and values, but may start from different S_0, z_0. Processing a sequence in pieces, each
 *   starting from the previous piece's final state, gives the outputs and gradients of one call.
 *   Error messages call the states S0, z0 (initial), S_N, z_N (final), dS_N, dz_N (gradient of
 *   the final state) and dS0, dz0 (gradient of the initial state).
 *
 *   Key lengths and starts: keys j >= kv_lengths[b] and keys j < kv_starts[b] (left padding)
 *   are removed by zeroing phi(k_j), never v_j (elu+1 maps 0 to 1, so a zeroed v would leave
 *   the key in the denominator); their dk and dv are 0. A row that sees no key and no
 *   initial state (its denominator is eps) gets output 0 and zero gradients, for every eps >= 0. A tiny but
 *   nonzero denominator gives the quotient: an elu+1 query whose features are all below
 *   2^-32 (every x < -22) is evaluated as exp(x - max x) with eps * e^(-max x), which leaves
 *   the output unchanged (Conventions, Numerics).
 *   Memory: O(N * max(C, M)) scratch per thread; the backward recomputes the states chunk by
 *   chunk and stores none per position.
 * ====================================================================================== */

/** The feature map phi. */
typedef enum performer_feature_map {
    PERFORMER_FEATURE_ELU_PLUS_ONE = 0, /* phi(x) = elu(x) + 1: x + 1 for x > 0, e^x otherwise (default) */
    PERFORMER_FEATURE_RELU = 1,         /* phi(x) = max(x, 0) */
    PERFORMER_FEATURE_IDENTITY = 2      /* phi(x) = x: q and k already hold features the caller
                                           computed; gradients are then w.r.t. those features */
} performer_feature_map;

typedef struct performer_linear_options_t {
    size_t size;                /* sizeof(performer_linear_options_t) */
    int causal;                 /* nonzero: query i sees keys j <= i (needs N = L) */
    int feature_map;            /* a performer_feature_map */
    double eps;                 /* added to every denominator: finite and >= 0 (0 is allowed) */
    const int64_t *kv_lengths;  /* NULL, or B key lengths in 0..L: phi(k_j) = 0 for j >= kv_lengths[b] */
    /* Appended: a struct of the older size, ending at kv_lengths, is still accepted (no starts). */
    const int64_t *kv_starts;   /* NULL, or B key starts in 0..L, each <= its row's length (L without
                                   kv_lengths): phi(k_j) = 0 for j < kv_starts[b] */
    int normalize;              /* nonzero (default): out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps);
                                   0: out_i = phi(q_i)^T S_i = sum_j (phi(q_i).phi(k_j)) v_j over the
                                   visible keys (plus phi(q_i)^T S_0): no denominator, no division, eps
                                   ignored (still checked), features of any sign. Appended after
                                   kv_starts: a struct of an older size (ending at kv_lengths or at
                                   kv_starts) is accepted and normalizes. */
} performer_linear_options_t;

/** Fills *options with the defaults: size = sizeof(performer_linear_options_t), not causal,
 *  PERFORMER_FEATURE_ELU_PLUS_ONE, eps = 1e-6, no key lengths or starts, normalize = 1. Does
 *  nothing when options is NULL. */
void performer_linear_options_init(performer_linear_options_t *options);

/** Forward: writes out (B x H x N x M). `options` may be NULL (the defaults).
 *  The state arguments come in pairs, each pair both NULL or both given:
 *  initial_state_s / initial_state_z (S_0: B x H x C x M, z_0: B x H x C x 1; NULL: zeros) are
 *  read, final_state_s / final_state_z receive (S_N, z_N). Causal, S_i = S_0 + sum_{j<=i}.
 *  Non-causal, every query sees S_0 + sum_j phi(k_j) v_j^T (a "memory" of earlier keys: cross-
 *  attention against a state, L may be 0) and the final state is that sum. No output may
 *  overlap an input or another output, so the final state cannot be written over the initial
 *  one (use the decoder's prefill, or performer_linear_state, to update a state in place).
 *  Half precision: q, k, v and out may be PERFORMER_FLOAT16 or PERFORMER_BFLOAT16 (all four
 *  the same); the state tensors are then PERFORMER_FLOAT32. q, k, v are widened to float32
 *  scratch (O(B*H*N*D)), the float32 kernels run, and out is rounded once.
 *
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        q, k, v or out is NULL, one tensor of a state pair is NULL
 *                                        and the other is not, or a non-empty tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, or differs from q's
 *                                        (a state: is not float32 in a half call)
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      shapes disagree (see above), a state's shape is not
 *                                        B x H x C x M / B x H x C x 1, Hk does not divide H,
 *                                        D = 0, causal with N != L
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, eps negative or not
 *                                        finite, feature_map not a performer_feature_map,
 *                                        kv_lengths[b] or kv_starts[b] outside 0..L,
 *                                        kv_starts[b] > kv_lengths[b]
 *    PERFORMER_ERROR_ALIASING            an output overlaps an input, another output or itself
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION options->size is not a size this library knows
 *    PERFORMER_ERROR_OUT_OF_MEMORY       scratch memory could not be allocated */
performer_status performer_linear_forward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_tensor_t *out,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    performer_tensor_t *final_state_s, performer_tensor_t *final_state_z,
    const performer_linear_options_t *options);

/** Forward plus the denominators: as performer_linear_forward, and `denominators` (B x H x N x 1,
 *  or NULL for none) receives den_i = phi(q_i)^T z_i = phi(q_i).(z_0 + sum of the visible
 *  phi(k_j)), without eps, whatever options->normalize (with normalize = 0 the output is the
 *  numerator, so out / den is the normalized form). In a half call the denominators are
 *  PERFORMER_FLOAT32, like the states. Errors: as performer_linear_forward, plus a
 *  denominators shape that is not B x H x N x 1 (SHAPE_MISMATCH) or that overlaps another
 *  argument (ALIASING); nothing is written on error. */
performer_status performer_linear_forward_with_denominators(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_tensor_t *out,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    performer_tensor_t *final_state_s, performer_tensor_t *final_state_z,
    performer_tensor_t *denominators, const performer_linear_options_t *options);

/** Backward: given dout = dLoss/dout (B x H x N x M), writes dq (q's shape), dk (k's shape) and
 *  dv (v's shape); with PERFORMER_FEATURE_IDENTITY, dq and dk are w.r.t. the features passed.
 *  Pass the same options (and initial state) as to the forward; nothing from the forward is
 *  needed, it is recomputed. With grouped-query attention dk and dv sum over the query heads
 *  sharing a key head. Gradients flow through the denominator and through phi.
 *  With options->normalize = 0 it is the gradient of the un-normalized product.
 *  Optional state pairs (each both NULL or both given; causal or not):
 *    initial_state_s/_z     the forward's S_0, z_0 (NULL: zeros);
 *    dfinal_state_s/_z      dLoss/dS_N, dLoss/dz_N when the loss also depends on the final
 *                           state (NULL: zeros), B x H x C x M and B x H x C x 1;
 *    dinitial_state_s/_z    receive dLoss/dS_0, dLoss/dz_0 (B x H x C x M, B x H x C x 1).
 *  Half precision: q, k, v, dout, dq, dk, dv all PERFORMER_FLOAT16 or all PERFORMER_BFLOAT16,
 *  every state tensor PERFORMER_FLOAT32; the gradients are summed in float32 and rounded once.
 *  Errors: as performer_linear_forward (q, k, v, dout, dq, dk, dv are required; no output may
 *  overlap any argument or another output); nothing is written on error. */
performer_status performer_linear_backward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *dout,
    performer_tensor_t *dq, performer_tensor_t *dk, performer_tensor_t *dv,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *dfinal_state_s, const performer_tensor_t *dfinal_state_z,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_linear_options_t *options);

/** State only: the state of keys and values without queries,
 *    state_s = S_0 + sum_{j < kv_len} phi(k_j) v_j^T   (B x Hs x C x M),
 *    state_z = z_0 + sum_{j < kv_len} phi(k_j)         (B x Hs x C x 1),
 *  from k (B x Hk x L x D) and v (B x Hk x L x M). Hs is state_s's shape[1], a multiple of Hk:
 *  state head h takes key head h / (Hs/Hk). Hs = Hk is one state per key head; Hs = H is the
 *  forward's per-query-head layout, so the result can be the initial state of a later
 *  performer_linear_forward. initial_state_s/_z (S_0, z_0, same shapes; both NULL: zeros) may be
 *  the same memory as state_s/_z with the same shape and strides (an in-place update); any other
 *  overlap is PERFORMER_ERROR_ALIASING. options: feature_map and kv_lengths apply; causal,
 *  normalize and eps do not (NULL: the defaults).
 *  Half precision: k and v both PERFORMER_FLOAT16 or both PERFORMER_BFLOAT16, the states
 *  PERFORMER_FLOAT32 (summed in float32 from the widened keys and values).
 *  Errors (nothing written): as performer_linear_forward for k, v, the states and options, plus
 *  SHAPE_MISMATCH when Hs is not a positive multiple of Hk. Messages call state_s/_z S_out,
 *  z_out (dstate_s/_z: dS_out, dz_out). */
performer_status performer_linear_state(
    const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    performer_tensor_t *state_s, performer_tensor_t *state_z,
    const performer_linear_options_t *options);

/** Backward of performer_linear_state: given dstate_s, dstate_z (B x Hs x C x M, B x Hs x C x 1)
 *  writes dk_j = phi'(k_j) * (dS v_j + dz) and dv_j = dS^T phi(k_j) (zero past kv_lengths[b];
 *  summed over the Hs/Hk state heads of each key head), and, when dinitial_state_s/_z are given
 *  (both or neither), the initial state's gradient, which equals dstate_s/_z. Same options as
 *  the call. Half precision: k, v, dk, dv of one half type, the state gradients float32; dk
 *  and dv are rounded once. Errors: as performer_linear_state (no output may overlap any other
 *  argument). */
performer_status performer_linear_state_backward(
    const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *dstate_s, const performer_tensor_t *dstate_z,
    performer_tensor_t *dk, performer_tensor_t *dv,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_linear_options_t *options);

/** The initial state's gradient from the query side alone: given a forward's q (B x H x N x D),
 *  its out and dout = dLoss/dout (B x H x N x M) and its denominators (B x H x N x 1, as
 *  performer_linear_forward_with_denominators returns them: phi(q_i)^T z_i without eps), writes
 *    dinitial_state_s = sum_i phi(q_i) g_i^T            (B x H x C x M),
 *    dinitial_state_z = -sum_i phi(q_i) (g_i . out_i)   (B x H x C x 1),
 *  with g_i = dout_i / (den_i + eps): the dLoss/dS_0, dLoss/dz_0 that performer_linear_backward
 *  returns when no final-state gradient is given (the same function, to rounding), in one pass
 *  over the rows of q, out, dout and denominators, without the keys. Distributed linear
 *  attention uses it: a rank's loss reaches the earlier ranks' keys only through its S_0, z_0.
 *  A row whose den_i + eps is 0 (eps = 0 and no feature mass: its output was zeros) adds
 *  nothing, as in the backward. options (NULL: the defaults): feature_map, eps and normalize
 *  apply, as in the forward; causal, kv_lengths and kv_starts do not (every query reads S_0
 *  directly, whatever the mask) and are ignored. With normalize = 0, denominators may be NULL
 *  (unread), g_i = dout_i and dinitial_state_z is zero.
 *  Half precision: q, out and dout all PERFORMER_FLOAT16 or all PERFORMER_BFLOAT16; the
 *  denominators and the state gradients PERFORMER_FLOAT32 (summed in float32).
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        q, out, dout, dinitial_state_s or _z is NULL, or
 *                                        denominators is NULL with normalize on, or a non-empty
 *                                        tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, or differs from q's
 *                                        (denominators or a state gradient: is not float32 in a
 *                                        half call)
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      out is not B x H x N x M, dout not out's shape,
 *                                        denominators not B x H x N x 1, the state gradients not
 *                                        B x H x C x M / B x H x C x 1, D = 0
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, eps negative or not
 *                                        finite, feature_map not a performer_feature_map
 *    PERFORMER_ERROR_ALIASING            an output overlaps an input, the other output or itself
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION options->size is not a size this library knows
 *    PERFORMER_ERROR_OUT_OF_MEMORY       scratch memory could not be allocated */
performer_status performer_linear_initial_state_gradient(
    const performer_tensor_t *q, const performer_tensor_t *out, const performer_tensor_t *dout,
    const performer_tensor_t *denominators,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_linear_options_t *options);

/* --------------------------------------------------------------------------------------
 * 6b. The recurrent decoder: causal linear attention one token at a time.
 *
 *   A decoder holds the state (S: B x H x C x M, z: B x H x C x 1) of B x H query heads and
 *   takes one token per step:  S <- S + phi(k) v^T,  z <- z + phi(k),
 *   out = phi(q)^T S / (phi(q)^T z + eps).  A step costs O(C * M) per head at any position
 *   and allocates nothing (a half decoder: nothing after its first step, which allocates the
 *   float32 copies of the tokens it keeps). Tokens are rank-4 tensors whose axis 2
 *   (positions) has length 1:
 *   q B x H x 1 x D, k B x Hk x 1 x D, v B x Hk x 1 x M, out B x H x 1 x M.
 *   "Prefill, then decode": performer_linear_decoder_prefill runs a prompt (the causal
 *   forward from the current state) and keeps its final state; or set_state loads the final
 *   state of a performer_linear_forward call.
 *
 *   Threads: one decoder may be used by one thread at a time (calls on the same handle must
 *   not overlap, and destroy must not overlap a call on it); distinct decoders may be used,
 *   created and destroyed from different threads at once.
 *   Errors: as everywhere, a failed call writes no output and leaves the state unchanged; a
 *   NULL decoder gives PERFORMER_ERROR_NULL_POINTER; a destroyed handle, a garbage value or a
 *   handle of another kind gives PERFORMER_ERROR_INVALID_ARGUMENT ("Handles", top of file).
 * -------------------------------------------------------------------------------------- */

/** An opaque decoder handle: create with performer_linear_decoder_create, free with
 *  performer_linear_decoder_destroy. */
typedef struct performer_linear_decoder_s *performer_linear_decoder_t;

/** Creates a decoder with a zero state and stores its handle in *decoder (left unchanged on
 *  error). dtype: the dtype of every token tensor passed to it (q, k, v, out) and of its
 *  state tensors (s, z), except that a PERFORMER_FLOAT16 or PERFORMER_BFLOAT16 decoder keeps
 *  its state in float32: its get_state, set_state and step_with_state take float32 s and z
 *  ("Half precision": each output is the float32 step's on the widened tokens, rounded once;
 *  the state is the float32 decoder's, bit for bit). key_heads (Hk) must be >= 1 and
 *  divide heads (pass heads for no grouping); head_dim (D) >= 1; batch, heads, value_dim (M)
 *  >= 0; feature_map a performer_feature_map; eps finite and >= 0 (1e-6 is the usual choice).
 *  Errors: PERFORMER_ERROR_NULL_POINTER (decoder is NULL), PERFORMER_ERROR_DTYPE_MISMATCH
 *  (unknown dtype), PERFORMER_ERROR_INVALID_ARGUMENT (a size, feature_map or eps out of its
 *  domain), PERFORMER_ERROR_SIZE_OVERFLOW (the state's size overflows),
 *  PERFORMER_ERROR_OUT_OF_MEMORY. */
performer_status performer_linear_decoder_create(
    performer_linear_decoder_t *decoder, performer_dtype dtype, int64_t batch, int64_t heads,
    int64_t key_heads, int64_t head_dim, int64_t value_dim, performer_feature_map feature_map,
    double eps);

/** Frees the decoder and its state. NULL, a destroyed handle (a second destroy), a garbage
 *  value or a handle of another kind: nothing happens. Cannot fail. */
void performer_linear_decoder_destroy(performer_linear_decoder_t decoder);

/** Sets S and z to zero (a new sequence). Errors: PERFORMER_ERROR_NULL_POINTER,
 *  PERFORMER_ERROR_INVALID_ARGUMENT (decoder is not a live linear decoder). */
performer_status performer_linear_decoder_reset(performer_linear_decoder_t decoder);

/** Takes one token per head (shapes above; any strides) and writes out (B x H x 1 x M).
 *  Errors (nothing written, state unchanged): PERFORMER_ERROR_NULL_POINTER (decoder or a
 *  tensor is NULL), PERFORMER_ERROR_DTYPE_MISMATCH (not the decoder's dtype; a state tensor:
 *  not the decoder's state dtype, float32 for a half decoder),
 *  PERFORMER_ERROR_SHAPE_MISMATCH (a shape differs from the decoder's),
 *  PERFORMER_ERROR_INVALID_ARGUMENT (reserved != 0, misaligned data),
 *  PERFORMER_ERROR_SIZE_OVERFLOW, PERFORMER_ERROR_ALIASING (out overlaps an input or itself),
 *  PERFORMER_ERROR_OUT_OF_MEMORY (only a half decoder's first step). */
performer_status performer_linear_decoder_step(
    performer_linear_decoder_t decoder, const performer_tensor_t *q, const performer_tensor_t *k,
    const performer_tensor_t *v, performer_tensor_t *out);

/** One step on a state the caller owns: s (B x H x C x M) and z (B x H x C x 1), any strides,
 *  are read and updated in place, exactly as performer_linear_decoder_step updates the
 *  decoder's own state (the same arithmetic, so the same bits); the decoder's own state is
 *  neither read nor changed, and the decoder serves only as the description of the problem
 *  (sizes, feature map, eps) and its step scratch. This is how a caller that keeps one state
 *  per sequence (or passes the state in and out of a recurrent layer) decodes without copies.
 *  Layouts with unit stride along M (s) and along C (z) are used directly; others go through
 *  a copy allocated for the call. Tokens as performer_linear_decoder_step.
 *  Errors (nothing written, s and z unchanged): as performer_linear_decoder_step, plus
 *  PERFORMER_ERROR_SHAPE_MISMATCH (s or z not B x H x C x M / B x H x C x 1),
 *  PERFORMER_ERROR_ALIASING (s or z overlaps a token, the other, or itself),
 *  PERFORMER_ERROR_OUT_OF_MEMORY (the copy for other layouts). */
performer_status performer_linear_decoder_step_with_state(
    performer_linear_decoder_t decoder, const performer_tensor_t *q, const performer_tensor_t *k,
    const performer_tensor_t *v, performer_tensor_t *out, performer_tensor_t *s, performer_tensor_t *z);

/** Runs a prompt of N tokens (q B x H x N x D, k B x Hk x N x D, v B x Hk x N x M) from the
 *  current state, writes its outputs into out (B x H x N x M) and keeps the final state: the
 *  same as N steps, at the speed of the chunked causal forward (which may use the library's
 *  worker threads). Errors: as performer_linear_decoder_step, plus
 *  PERFORMER_ERROR_OUT_OF_MEMORY; nothing written and the state unchanged on error. */
performer_status performer_linear_decoder_prefill(
    performer_linear_decoder_t decoder, const performer_tensor_t *q, const performer_tensor_t *k,
    const performer_tensor_t *v, performer_tensor_t *out);

/** Copies the state into s (B x H x C x M) and z (B x H x C x 1), any strides (one block copy
 *  when s and z are contiguous), both of the decoder's state dtype (float32 for a half
 *  decoder). Errors: PERFORMER_ERROR_NULL_POINTER, _DTYPE_MISMATCH, _SHAPE_MISMATCH, _INVALID_ARGUMENT,
 *  _SIZE_OVERFLOW, _ALIASING (s and z overlap, or one overlaps itself); nothing written. */
performer_status performer_linear_decoder_get_state(
    performer_linear_decoder_t decoder, performer_tensor_t *s, performer_tensor_t *z);

/** Replaces the state with s (B x H x C x M) and z (B x H x C x 1), e.g. the final state of a
 *  causal performer_linear_forward. Errors: as get_state (no aliasing rule: s and z are only
 *  read); the state is unchanged on error. */
performer_status performer_linear_decoder_set_state(
    performer_linear_decoder_t decoder, const performer_tensor_t *s, const performer_tensor_t *z);

/* ======================================================================================
 * 7. FAVOR+ (Performer random features, docs/ALGORITHMS.md section 3; docs/FAVOR.md gives
 *    the generator, the projections and the stabilized evaluation in full)
 *
 *   A projection W (m x D: num_features rows of dimension dim) maps each row x of q or k
 *   (B x H x N x D) to features phi(x) (B x H x N x C). With x^ = x * scale^(1/2) (scale
 *   1/sqrt(D) unless options->has_scale), u = W x^ (m values) and n = |x^|^2:
 *     PERFORMER_FAVOR_POSITIVE       phi = exp(u - n/2) / sqrt(m)                     C = m
 *     PERFORMER_FAVOR_HYPERBOLIC     phi = [exp(u - n/2), exp(-u - n/2)] / sqrt(2m)   C = 2m
 *     PERFORMER_FAVOR_TRIGONOMETRIC  phi = exp(n/2) / sqrt(m) * [sin u, cos u]        C = 2m
 *     PERFORMER_FAVOR_RELU           phi = max(u, 0) + relu_offset                    C = m
 *   For the first three, phi(q)^T phi(k) is an unbiased estimate of exp(scale * q^T k), the
 *   softmax kernel; FAVOR+ attention is linear attention on these features.
 *
 *   Projections are drawn from a counter-based generator that docs/FAVOR.md specifies to the
 *   bit (splitmix64 words, Box-Muller normals, Householder QR in a fixed order), so a
 *   (dim, num_features, kind, norms, seed, draw) tuple gives the same W on every build and
 *   platform (up to the last bit of the C library's log/sin/cos). The first rows do not
 *   depend on num_features: drawing more features extends W.
 *
 *   Feature values are the mathematical ones (no stabilizer): exponential features overflow
 *   to +inf or underflow to 0 where their value is not representable (docs/FAVOR.md,
 *   "Overflow"); attention (7b) and the decoder (7c) use the stabilized (scaled) form and
 *   stay finite.
 *   Threads: a projection handle may be used from many threads at once, redraw included
 *   (every call sees W either before or after a concurrent redraw, never a mixture); its
 *   destroy must not overlap a call on it.
 *   Every function taking a projection fails with PERFORMER_ERROR_NULL_POINTER when it is
 *   NULL and PERFORMER_ERROR_INVALID_ARGUMENT when it is not a live projection (destroyed,
 *   garbage, or a decoder handle: "Handles", top of file); nothing is written then.
 * ====================================================================================== */

/** How W is drawn. */
typedef enum performer_favor_projection_kind {
    PERFORMER_PROJECTION_ORTHOGONAL = 0, /* ceil(m/D) stacked Haar-orthogonal D x D blocks (default) */
    PERFORMER_PROJECTION_IID = 1         /* independent standard Gaussian entries */
} performer_favor_projection_kind;

/** How the rows of W are scaled. */
typedef enum performer_favor_norms {
    PERFORMER_NORMS_CHI = 0,   /* each row has the norm of a D-dim standard Gaussian vector
                                  (rows are then exactly N(0, I_D)); iid rows are left as drawn (default) */
    PERFORMER_NORMS_FIXED = 1  /* every row has norm sqrt(D) */
} performer_favor_norms;

/** The feature map phi (formulas above). */
typedef enum performer_favor_feature_kind {
    PERFORMER_FAVOR_POSITIVE = 0,      /* FAVOR+ (default) */
    PERFORMER_FAVOR_HYPERBOLIC = 1,    /* positive, lower variance, C = 2m */
    PERFORMER_FAVOR_TRIGONOMETRIC = 2, /* sin/cos (the original FAVOR; features can be negative) */
    PERFORMER_FAVOR_RELU = 3           /* generalized attention: relu(u) + relu_offset */
} performer_favor_feature_kind;

/** An opaque projection handle: create with performer_favor_projection_create or
 *  performer_favor_projection_create_from_matrix, free with performer_favor_projection_destroy.
 *  Functions that take a projection copy W at the start of the call; a decoder copies it
 *  when it is created (a later redraw does not change an existing decoder). */
typedef struct performer_favor_projection_s *performer_favor_projection_t;

/** Draws W (num_features x dim) from `seed` as draw 0 and stores a new handle in *projection
 *  (left unchanged on error). dim >= 1, num_features >= 1.
 *  Errors: PERFORMER_ERROR_NULL_POINTER (projection is NULL), PERFORMER_ERROR_INVALID_ARGUMENT
 *  (dim or num_features < 1, kind or norms not one of the enums), PERFORMER_ERROR_SIZE_OVERFLOW
 *  (num_features * dim, or dim^2 * ceil(num_features / dim) for orthogonal, above 2^40),
 *  PERFORMER_ERROR_OUT_OF_MEMORY (W and the draw's temporaries cannot be allocated). */
performer_status performer_favor_projection_create(
    performer_favor_projection_t *projection, int64_t dim, int64_t num_features,
    performer_favor_projection_kind kind, performer_favor_norms norms, uint64_t seed);

/** A projection with the caller's W: w is a 1 x 1 x m x D tensor (float32, float64, float16 or
 *  bfloat16, any strides), copied (float32 and half entries convert exactly to float64). Every
 *  entry must be finite.
 *  Such a projection has no generator: redraw and the seed, kind and norms getters fail with
 *  PERFORMER_ERROR_INVALID_ARGUMENT; its draw is 0.
 *  Errors: PERFORMER_ERROR_NULL_POINTER (projection, w or w->data NULL),
 *  PERFORMER_ERROR_DTYPE_MISMATCH, PERFORMER_ERROR_SHAPE_MISMATCH (w is not 1 x 1 x m x D),
 *  PERFORMER_ERROR_INVALID_ARGUMENT (m or D = 0, an entry not finite, reserved != 0,
 *  misaligned data), PERFORMER_ERROR_SIZE_OVERFLOW, PERFORMER_ERROR_OUT_OF_MEMORY (W's copies
 *  cannot be allocated: a broadcast w may describe more entries than memory holds). */
performer_status performer_favor_projection_create_from_matrix(
    performer_favor_projection_t *projection, const performer_tensor_t *w);

/** Frees the projection; decoders made from it keep their copy of W. NULL, a destroyed handle
 *  (a second destroy), a garbage value or a handle of another kind: nothing happens. Cannot
 *  fail. */
void performer_favor_projection_destroy(performer_favor_projection_t projection);

/** Replaces W by the generator's next draw (draw + 1). Never looks at data. Errors:
 *  PERFORMER_ERROR_NULL_POINTER, PERFORMER_ERROR_INVALID_ARGUMENT (W came from the caller),
 *  PERFORMER_ERROR_OUT_OF_MEMORY (W is unchanged then). */
performer_status performer_favor_projection_redraw(performer_favor_projection_t projection);

/** Copies W into out, a 1 x 1 x m x D tensor of dtype float32 (W rounded once, as float32
 *  features use it), float64 (exact), or float16 / bfloat16 (that float32 W rounded once to
 *  the half type: to nearest, ties to even), any strides. Errors: PERFORMER_ERROR_NULL_POINTER,
 *  _DTYPE_MISMATCH, _SHAPE_MISMATCH, _INVALID_ARGUMENT, _SIZE_OVERFLOW, _ALIASING (out
 *  overlaps itself); nothing written. */
performer_status performer_favor_projection_get_matrix(
    performer_favor_projection_t projection, performer_tensor_t *out);

/** Getters: each writes one value into *value (left unchanged on error) and fails with
 *  PERFORMER_ERROR_NULL_POINTER when the projection or value is NULL. get_seed, get_kind and
 *  get_norms fail with PERFORMER_ERROR_INVALID_ARGUMENT for a caller's W (it has none).
 *  get_draw: 0 after create, + 1 per redraw. */
performer_status performer_favor_projection_get_dim(performer_favor_projection_t projection, int64_t *value);
performer_status performer_favor_projection_get_num_features(performer_favor_projection_t projection,
                                                             int64_t *value);
performer_status performer_favor_projection_get_seed(performer_favor_projection_t projection, uint64_t *value);
performer_status performer_favor_projection_get_draw(performer_favor_projection_t projection, uint64_t *value);
performer_status performer_favor_projection_get_kind(performer_favor_projection_t projection,
                                                     performer_favor_projection_kind *value);
performer_status performer_favor_projection_get_norms(performer_favor_projection_t projection,
                                                      performer_favor_norms *value);

/** Options of the FAVOR+ functions. Each function's comment says which fields it reads. */
typedef struct performer_favor_options_t {
    size_t size;                /* sizeof(performer_favor_options_t) */
    int causal;                 /* nonzero: query i sees keys j <= i (attention only) */
    int features;               /* a performer_favor_feature_kind */
    int has_scale;              /* nonzero: use `scale`; zero: 1 / sqrt(D) */
    double scale;               /* when has_scale: finite and >= 0 (x^ = x * scale^(1/2)) */
    double eps;                 /* added to the denominators, in the units of the mathematical
                                   features: finite and >= 0 (default 0) */
    double relu_offset;         /* kappa of PERFORMER_FAVOR_RELU: finite and >= 0 (default 1e-3) */
    const int64_t *kv_lengths;  /* NULL, or B key lengths in 0..L (attention only) */
    /* Appended: a struct of the older size, ending at kv_lengths, is still accepted (no starts). */
    const int64_t *kv_starts;   /* NULL, or B key starts in 0..L, each <= its row's length (L without
                                   kv_lengths): keys j < kv_starts[b] take no part (attention only) */
} performer_favor_options_t;

/** Fills *options with the defaults: size = sizeof(performer_favor_options_t), not causal,
 *  PERFORMER_FAVOR_POSITIVE, scale 1/sqrt(D), eps = 0, relu_offset = 1e-3, no key lengths or
 *  starts. Does nothing when options is NULL. */
void performer_favor_options_init(performer_favor_options_t *options);

/** The number of features C of `features` for this projection (m, or 2m for hyperbolic and
 *  trigonometric), written to *count. Errors: PERFORMER_ERROR_NULL_POINTER,
 *  PERFORMER_ERROR_INVALID_ARGUMENT (features not a performer_favor_feature_kind). */
performer_status performer_favor_feature_count(
    performer_favor_projection_t projection, performer_favor_feature_kind features, int64_t *count);

/** phi(x): x is B x H x N x D (D = the projection's dim), out B x H x N x C, same dtype, any
 *  strides. Reads options->features, has_scale, scale and relu_offset (the other fields are
 *  ignored); options may be NULL (the defaults). Queries and keys use the same map.
 *  Each exponential is evaluated on the whole exponent: in float64 (rounded once) for float64,
 *  with a float32 vector exp for float32 (relative error about |exponent| x float32 rounding).
 *  Half precision: x and out both PERFORMER_FLOAT16 or both PERFORMER_BFLOAT16: computed as
 *  float32 and rounded once (a feature past the half type's range becomes +infinity).
 *  Errors (nothing written): PERFORMER_ERROR_NULL_POINTER (x, out, projection, or data),
 *  PERFORMER_ERROR_DTYPE_MISMATCH, PERFORMER_ERROR_SIZE_OVERFLOW,
 *  PERFORMER_ERROR_SHAPE_MISMATCH (x.shape[3] != dim, out's shape),
 *  PERFORMER_ERROR_INVALID_ARGUMENT (features, scale or relu_offset out of its domain,
 *  reserved != 0, misaligned data), PERFORMER_ERROR_ALIASING (out overlaps x or itself),
 *  PERFORMER_ERROR_UNSUPPORTED_VERSION (options->size), PERFORMER_ERROR_OUT_OF_MEMORY. */
performer_status performer_favor_features(
    const performer_tensor_t *x, performer_favor_projection_t projection, performer_tensor_t *out,
    const performer_favor_options_t *options);

/** The gradient of phi: given x (B x H x N x D) and dfeatures = dLoss/dphi (B x H x N x C),
 *  writes dx = dLoss/dx (B x H x N x D), recomputing phi (W gets no gradient; relu's
 *  subgradient at u = 0 is 0). Same options, dtypes (half: x, dfeatures, dx all of one half
 *  type) and errors as performer_favor_features (dx must not overlap x, dfeatures or itself). */
performer_status performer_favor_features_backward(
    const performer_tensor_t *x, performer_favor_projection_t projection, const performer_tensor_t *dfeatures,
    performer_tensor_t *dx, const performer_favor_options_t *options);

/* --------------------------------------------------------------------------------------
 * 7b. FAVOR+ attention: linear attention (section 6) on the features above, bidirectional
 *     or causal, forward and backward.
 *
 *   q: B x H x N x D (D = the projection's dim), k: B x Hk x L x D, v: B x Hk x L x M,
 *   out: B x H x N x M; Hk must divide H (query head h reads key head h / (H / Hk)).
 *   Non-causal: out_i = sum_j phi(q_i).phi(k_j) v_j / (sum_j phi(q_i).phi(k_j) + eps) over
 *   every key kv_starts[b] <= j < kv_lengths[b] (all L without key starts and lengths; masked
 *   keys get zero features, dk = dv = 0, and enter no stabilizer max), plus, when an initial
 *   state is given, the keys it stands for (a "memory", as linear attention's: cross-attention
 *   against a state, e.g. performer_favor_state's; L may be 0). Causal (N must equal L): over
 *   j <= i only, continuing from an initial state when one is given.
 *   eps is in the units of the mathematical features (default 0). A row that sees no key
 *   outputs 0 (for every eps) and gets zero gradients, never NaN/Inf; a denominator that is
 *   tiny but not 0 gives the quotient (see Conventions, Numerics).
 *
 *   Evaluation is in the stabilized (scaled) form of docs/FAVOR.md section 4, so the output
 *   is the mathematical function even where the features themselves under- or overflow
 *   (inputs of norm 30 and more; causal calls tested up to norm 1000 in float32: a row whose
 *   chunk terms all underflow is evaluated as the decoder does); one call, pieces with a
 *   carried state, and decoder steps agree to rounding.
 *
 *   State: the scaled triple, one per QUERY head, as the decoder's (7c):
 *   S~ (B x H x C x M), z~ (B x H x C x 1) and c (B x H x C x 1), the mathematical state being
 *   S = diag(e^c) S~, z = e^c * z~. c_f = -infinity means "no key yet" (its S~ row and z~
 *   entry must be 0); relu features need c = 0, trigonometric one c per head. (S, z, 0) is a
 *   valid state too. The shifts c of an initial state need not match the call's keys: they
 *   are merged by the max rule of docs/FAVOR.md section 4 (the state rescaled where a key's
 *   exponent is larger), so the output is that of one call over the state's keys and the
 *   call's. Each triple is all NULL or all given. A final state may be written over
 *   the initial state's memory (the next piece continues from it in place) only with the same
 *   layout: each final tensor that overlaps an initial one must have its data pointer, shape
 *   and strides (any other overlap, e.g. z_N one head after z0, is
 *   PERFORMER_ERROR_ALIASING); it must not overlap any other argument. State gradients (dLoss/dS~, dLoss/dz~ with c held fixed) are
 *   pairs (c carries no gradient). Error messages call the states S0, z0, c0 (initial),
 *   S_N, z_N, c_N (final), dS_N, dz_N and dS0, dz0 (gradients).
 *   Memory: O(N + T * max(C, M, D) + C * M) scratch per thread (T the chunk length); the
 *   backward stores no state per position (the causal backward keeps 3 + 2T numbers per
 *   position: row scalars and its chunk's scores).
 * -------------------------------------------------------------------------------------- */

/** Forward: writes out (B x H x N x M). Reads options->causal, features, has_scale, scale,
 *  eps, relu_offset, kv_lengths and kv_starts; options may be NULL (the defaults: bidirectional,
 *  positive features). W is the projection's at the start of the call.
 *  initial_state_s/_z/_c (NULL: no keys before) are read; final_state_s/_z/_c receive the
 *  state after the last key. Causal, S_i = S_0 + sum_{j<=i}; non-causal, every query sees the
 *  initial state plus all visible keys (a memory) and the final state is that sum.
 *
 *  Half precision: q, k, v and out may be PERFORMER_FLOAT16 or PERFORMER_BFLOAT16 (all four
 *  the same); the state tensors are then PERFORMER_FLOAT32. q, k, v are widened to float32
 *  scratch (O(B*H*N*D)), the float32 kernels run, and out is rounded once.
 *
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        q, k, v, projection or out is NULL, a state triple is
 *                                        partly NULL, or a non-empty tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, or differs from q's
 *                                        (a state: is not float32 in a half call)
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      shapes disagree, q.shape[3] != the projection's dim,
 *                                        a state's C is not the feature count (m or 2m) or its
 *                                        shape is not B x H x C x M / B x H x C x 1, Hk does not
 *                                        divide H, causal with N != L
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, features not a
 *                                        performer_favor_feature_kind, scale, eps or relu_offset
 *                                        out of its domain, kv_lengths[b] or kv_starts[b]
 *                                        outside 0..L, kv_starts[b] > kv_lengths[b], a bad
 *                                        initial state (S~ or z~ not
 *                                        finite, c NaN or +inf, c = -inf over a nonzero row,
 *                                        relu c != 0, trigonometric c not constant per head)
 *    PERFORMER_ERROR_ALIASING            an output overlaps an input, another output or itself
 *                                        (except a final state tensor laid exactly over an
 *                                        initial state tensor: same data, shape, strides)
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION options->size is not a size this library knows
 *    PERFORMER_ERROR_OUT_OF_MEMORY       scratch memory could not be allocated */
performer_status performer_favor_forward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_favor_projection_t projection, performer_tensor_t *out,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *initial_state_c,
    performer_tensor_t *final_state_s, performer_tensor_t *final_state_z, performer_tensor_t *final_state_c,
    const performer_favor_options_t *options);

/** Forward plus the row scales: as performer_favor_forward, and per query row i (causal or
 *  not) row_units (B x H x N x 1) receives the row unit U_i and row_denominators (B x H x N x 1)
 *  the scaled denominator den_i that out_i = num_i / den_i was divided by, both in the units of
 *  docs/FAVOR.md section 4: the mathematical denominator sum_j phi(q_i).phi(k_j) + eps (the
 *  initial state's keys included) equals e^{U_i} * den_i, eps entering den_i as eps * e^{-U_i};
 *  and U_i >= a_f(q_i) + c_f for every feature f of the state (S~, z~, c) row i read (a_f the
 *  exponent of the exponential kinds; for trigonometric and relu U_i >= rho_i + c). A row that
 *  outputs zeros (it sees no key, or its denominator is not finite and nonzero) gets
 *  den_i = 0 (U_i = -inf when it sees no key). With them a caller forms the gradient of the
 *  initial triple from the queries alone (dS~_0[f] = sum_i nu e^{a_f(q_i)+c0_f-U_i} dout_i /
 *  den_i, docs/DISTRIBUTED.md). Both given or both NULL (NULL: as performer_favor_forward);
 *  out is the same, bit for bit, either way. In a half call both are PERFORMER_FLOAT32, like
 *  the states. Errors: as performer_favor_forward, plus one of the two NULL and not the
 *  other (NULL_POINTER), a shape that is not B x H x N x 1 (SHAPE_MISMATCH), a dtype not the
 *  state dtype (DTYPE_MISMATCH), an overlap with another argument (ALIASING); nothing is
 *  written on error. */
performer_status performer_favor_forward_with_row_scales(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    performer_favor_projection_t projection, performer_tensor_t *out,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *initial_state_c,
    performer_tensor_t *final_state_s, performer_tensor_t *final_state_z, performer_tensor_t *final_state_c,
    performer_tensor_t *row_units, performer_tensor_t *row_denominators,
    const performer_favor_options_t *options);

/** Backward: given dout = dLoss/dout (B x H x N x M), writes dq (q's shape), dk (k's shape)
 *  and dv (v's shape), through phi and the denominator (W gets no gradient, the stabilizer
 *  none). Pass the forward's projection, options and initial state; the forward is
 *  recomputed, nothing from it is needed. With grouped-query attention dk and dv sum over
 *  the query heads sharing a key head. Optional, causal or not (non-causal: the memory's):
 *    initial_state_s/_z/_c  the forward's initial state (a triple, all or none);
 *    dfinal_state_s/_z      dLoss/dS~_N, dLoss/dz~_N (B x H x C x M, B x H x C x 1; finite)
 *                           when the loss also depends on the final state (NULL: zeros),
 *                           taken with the forward's c_N held fixed;
 *    dinitial_state_s/_z    receive dLoss/dS~_0, dLoss/dz~_0 (c_0 held fixed); need the
 *                           initial state.
 *  Half precision: q, k, v, dout, dq, dk, dv all PERFORMER_FLOAT16 or all PERFORMER_BFLOAT16,
 *  every state tensor PERFORMER_FLOAT32; the gradients are summed in float32 and rounded once.
 *  Errors: as performer_favor_forward (q, k, v, dout, projection, dq, dk, dv are required; a
 *  pair partly NULL is PERFORMER_ERROR_NULL_POINTER; no output may overlap any argument or
 *  another output; dS0/dz0 without an initial state or a non-finite dS_N/dz_N is
 *  PERFORMER_ERROR_INVALID_ARGUMENT); nothing is written on error. */
performer_status performer_favor_backward(
    const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
    const performer_tensor_t *dout, performer_favor_projection_t projection,
    performer_tensor_t *dq, performer_tensor_t *dk, performer_tensor_t *dv,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *initial_state_c,
    const performer_tensor_t *dfinal_state_s, const performer_tensor_t *dfinal_state_z,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_favor_options_t *options);

/** State only: the scaled state (S~, z~, c) of keys and values without queries, i.e. the
 *  mathematical state S = diag(e^c) S~ = S_0 + sum_j phi(k_j) v_j^T, z = e^c * z~ = z_0 +
 *  sum_j phi(k_j) over the keys kv_starts[b] <= j < kv_lengths[b] -- the causal forward's final
 *  state over the same keys (to rounding), computed with the same max-shift (stable at any
 *  input norm), no query output computed. k: B x Hk x L x D, v: B x Hk x L x M; the state has
 *  Hs heads, read from state_s's shape[1], a positive multiple of Hk (state head h reads key
 *  head h / (Hs / Hk)): Hs = Hk gives one state per key head, Hs = H the forward's per-query-head
 *  state, which can start a later causal forward or a decoder (set_state).
 *    state_s (B x Hs x C x M), state_z, state_c (B x Hs x C x 1) receive the triple;
 *    initial_state_s/_z/_c (all NULL: no keys before, or all given, same shapes) are read.
 *  The state may be written over the initial state's memory only with the same layout (data
 *  pointer, shape and strides per tensor); any other overlap is PERFORMER_ERROR_ALIASING.
 *  options: features, has_scale, scale, relu_offset, kv_lengths, kv_starts apply; causal and
 *  eps do not (NULL: the defaults).
 *  Half precision: k and v both PERFORMER_FLOAT16 or both PERFORMER_BFLOAT16, the state
 *  triples PERFORMER_FLOAT32.
 *  Errors (nothing written): as performer_favor_forward for k, v, the projection, the states and
 *  options, plus SHAPE_MISMATCH when Hs is not a positive multiple of Hk or k.shape[3] is not
 *  the projection's dim. Messages call state_s/_z/_c S_out, z_out, c_out and the initial
 *  state S0, z0, c0. */
performer_status performer_favor_state(
    const performer_tensor_t *k, const performer_tensor_t *v, performer_favor_projection_t projection,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *initial_state_c,
    performer_tensor_t *state_s, performer_tensor_t *state_z, performer_tensor_t *state_c,
    const performer_favor_options_t *options);

/** Backward of performer_favor_state, with the shifts held fixed (as performer_favor_backward
 *  treats state gradients): given dstate_s = dLoss/dS~, dstate_z = dLoss/dz~ (B x Hs x C x M,
 *  B x Hs x C x 1; finite) writes dk and dv (k's and v's shapes; zero for keys outside their
 *  range; summed over the Hs/Hk state heads of each key head) and, when dinitial_state_s/_z
 *  are given (both or neither; they need the initial state), dLoss/dS~_0, dLoss/dz~_0 =
 *  e^(c_0 - c) * (dstate_s, dstate_z) per feature. initial_state_s/_z/_c: the call's initial
 *  state (all or none; c is recomputed from it and the keys). Same projection and options as
 *  the call. Errors (nothing written): as performer_favor_state; no output may overlap any
 *  other argument; dS0/dz0 without an initial state or a non-finite dS_out/dz_out is
 *  PERFORMER_ERROR_INVALID_ARGUMENT. Messages call dstate_s/_z dS_out, dz_out. Half precision:
 *  k, v, dk, dv of one half type, every state tensor float32; dk and dv are rounded once. */
performer_status performer_favor_state_backward(
    const performer_tensor_t *k, const performer_tensor_t *v, performer_favor_projection_t projection,
    const performer_tensor_t *dstate_s, const performer_tensor_t *dstate_z,
    performer_tensor_t *dk, performer_tensor_t *dv,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_tensor_t *initial_state_s, const performer_tensor_t *initial_state_z,
    const performer_tensor_t *initial_state_c,
    const performer_favor_options_t *options);

/** The initial triple's gradient from the query side alone (the FAVOR+ twin of
 *  performer_linear_initial_state_gradient; distributed FAVOR+ uses it, docs/DISTRIBUTED.md):
 *  given a forward's q (B x H x N x D), its initial shifts c0 (B x H x C x 1), the row units U_i
 *  and scaled denominators den_i it returned (B x H x N x 1 each, from
 *  performer_favor_forward_with_row_scales), its out and dout = dLoss/dout (B x H x N x M),
 *  writes, with c0 held fixed,
 *    dinitial_state_s = sum_i Q_i g_i^T            (B x H x C x M),
 *    dinitial_state_z = -sum_i Q_i (g_i . out_i)   (B x H x C x 1),
 *  with g_i = dout_i / den_i and Q_if = phi_f(q_i) e^{c0_f - U_i} (= nu e^{a_f(q_i) + c0_f - U_i}
 *  for the exponential kinds: at most nu, finite at any norm): the dLoss/dS~_0, dLoss/dz~_0
 *  that performer_favor_backward returns when no final-state gradient is given (the same
 *  function, to rounding), in one pass over the rows of q, out and dout, without the keys and
 *  with no N x C buffer (the features of a chunk of rows at a time). A row with den_i = 0 or
 *  U_i = -inf (it output zeros) adds nothing. U_i must bound the row's exponents as the
 *  forward's does (U_i >= a_f(q_i) + c0_f; trigonometric and relu: rho_i + c0); an exponent
 *  above U_i counts as U_i. options (NULL: the defaults): features, has_scale, scale and
 *  relu_offset apply, as in the forward; causal, eps (inside den_i already), kv_lengths and
 *  kv_starts do not and are ignored. float32 and float64 only; every tensor of q's dtype.
 *  Grouped-query attention needs nothing more: the state is per query head.
 *  Errors (nothing written in every case):
 *    PERFORMER_ERROR_NULL_POINTER        a tensor or the projection is NULL, or a non-empty
 *                                        tensor's data is NULL
 *    PERFORMER_ERROR_DTYPE_MISMATCH      a dtype is not a performer_dtype, differs from q's,
 *                                        or is a half type
 *    PERFORMER_ERROR_SIZE_OVERFLOW       a negative shape, or a tensor's extent overflows 64 bits
 *    PERFORMER_ERROR_SHAPE_MISMATCH      q.shape[3] != the projection's dim, out is not
 *                                        B x H x N x M, dout not out's shape, row_units or
 *                                        row_denominators not B x H x N x 1, c0 not B x H x C x 1,
 *                                        the gradients not B x H x C x M / B x H x C x 1
 *    PERFORMER_ERROR_INVALID_ARGUMENT    reserved != 0, misaligned data, features not a
 *                                        performer_favor_feature_kind, scale or relu_offset out of
 *                                        its domain, c0 NaN or +inf (relu: not 0; trigonometric:
 *                                        not constant per head), a row unit NaN or +inf, a row
 *                                        denominator not finite
 *    PERFORMER_ERROR_ALIASING            an output overlaps an input, the other output or itself
 *    PERFORMER_ERROR_UNSUPPORTED_VERSION options->size is not a size this library knows
 *    PERFORMER_ERROR_OUT_OF_MEMORY       scratch memory could not be allocated */
performer_status performer_favor_initial_state_gradient(
    const performer_tensor_t *q, performer_favor_projection_t projection,
    const performer_tensor_t *initial_state_c,
    const performer_tensor_t *row_units, const performer_tensor_t *row_denominators,
    const performer_tensor_t *out, const performer_tensor_t *dout,
    performer_tensor_t *dinitial_state_s, performer_tensor_t *dinitial_state_z,
    const performer_favor_options_t *options);

/* --------------------------------------------------------------------------------------
 * 7c. The FAVOR+ decoder: causal FAVOR+ attention one token at a time.
 *
 *   Holds, for B x H heads, the state of causal FAVOR+ attention in its stabilized form
 *   (docs/FAVOR.md section 4): S~ (B x H x C x M), z~ (B x H x C x 1) and the per-feature
 *   shift c (B x H x C x 1), so that the mathematical state is S = diag(e^c) S~,
 *   z = e^c * z~. c_f = -infinity means no key yet (its S~ row and z~ entry are 0); relu
 *   features keep c = 0; trigonometric features keep one c per head (every c_f of a head equal).
 *   A step takes q, k (B x H x 1 x D) and v (B x H x 1 x M), folds the key in first and then
 *   reads the state with the query (key j <= i), and writes out (B x H x 1 x M):
 *     out = phi(q)^T S / (phi(q)^T z + eps),
 *   computed in the scaled form so it stays finite for large |q|, |k|. A row whose
 *   denominator underflows (or is 0) outputs 0, never NaN or Inf. O(C * M) per head and token.
 *
 *   Threads: one decoder may be used by one thread at a time (destroy must not overlap a
 *   call on it); distinct decoders may be used, created and destroyed from different
 *   threads at once. A failed call writes no output and leaves the state unchanged; a NULL
 *   decoder gives PERFORMER_ERROR_NULL_POINTER; a destroyed handle, a garbage value or a
 *   handle of another kind gives PERFORMER_ERROR_INVALID_ARGUMENT ("Handles", top of file).
 * -------------------------------------------------------------------------------------- */

/** An opaque FAVOR+ decoder handle. */
typedef struct performer_favor_decoder_s *performer_favor_decoder_t;

/** Creates a decoder with an empty state (S~ = 0, z~ = 0, c = -inf; c = 0 for relu) over a
 *  copy of the projection's current W. dtype: of every tensor passed to it, except that a
 *  PERFORMER_FLOAT16 or PERFORMER_BFLOAT16 decoder keeps its state in float32 (get_state and
 *  set_state take a float32 triple; each step's out is the float32 step's on the widened
 *  tokens, rounded once); batch, heads,
 *  value_dim (M) >= 0. Reads options->features, has_scale, scale, eps and relu_offset
 *  (options may be NULL: the defaults). Errors: PERFORMER_ERROR_NULL_POINTER (decoder or
 *  projection NULL), PERFORMER_ERROR_DTYPE_MISMATCH (unknown dtype),
 *  PERFORMER_ERROR_INVALID_ARGUMENT (a negative size, an option out of its domain),
 *  PERFORMER_ERROR_SIZE_OVERFLOW, PERFORMER_ERROR_UNSUPPORTED_VERSION (options->size),
 *  PERFORMER_ERROR_OUT_OF_MEMORY. */
performer_status performer_favor_decoder_create(
    performer_favor_decoder_t *decoder, performer_favor_projection_t projection, performer_dtype dtype,
    int64_t batch, int64_t heads, int64_t value_dim, const performer_favor_options_t *options);

/** Frees the decoder. NULL, a destroyed handle (a second destroy), a garbage value or a
 *  handle of another kind: nothing happens. Cannot fail. */
void performer_favor_decoder_destroy(performer_favor_decoder_t decoder);

/** Empties the state (a new sequence). Errors: PERFORMER_ERROR_NULL_POINTER,
 *  PERFORMER_ERROR_INVALID_ARGUMENT (decoder is not a live FAVOR+ decoder). */
performer_status performer_favor_decoder_reset(performer_favor_decoder_t decoder);

/** One token (shapes above, any strides); writes out (B x H x 1 x M).
 *  Errors (nothing written, state unchanged): PERFORMER_ERROR_NULL_POINTER,
 *  PERFORMER_ERROR_DTYPE_MISMATCH (not the decoder's dtype), PERFORMER_ERROR_SHAPE_MISMATCH,
 *  PERFORMER_ERROR_INVALID_ARGUMENT (reserved != 0, misaligned data),
 *  PERFORMER_ERROR_SIZE_OVERFLOW, PERFORMER_ERROR_ALIASING (out overlaps an input or itself),
 *  PERFORMER_ERROR_OUT_OF_MEMORY (a half decoder's first step allocates its float32 copies
 *  of the tokens, kept for later steps). */
performer_status performer_favor_decoder_step(
    performer_favor_decoder_t decoder, const performer_tensor_t *q, const performer_tensor_t *k,
    const performer_tensor_t *v, performer_tensor_t *out);

/** Copies the state into s (B x H x C x M), z (B x H x C x 1) and c (B x H x C x 1), any
 *  strides; all three of the decoder's state dtype (its dtype; float32 for a half decoder).
 *  Errors: PERFORMER_ERROR_NULL_POINTER, _DTYPE_MISMATCH, _SHAPE_MISMATCH,
 *  _INVALID_ARGUMENT, _SIZE_OVERFLOW, _ALIASING (two of s, z, c overlap, or one overlaps
 *  itself); nothing written. */
performer_status performer_favor_decoder_get_state(
    performer_favor_decoder_t decoder, performer_tensor_t *s, performer_tensor_t *z, performer_tensor_t *c);

/** Replaces the state by the triple (s, z, c) (shapes as get_state). s and z must be finite;
 *  c finite or -infinity (then that feature's s row and z entry must be 0); relu needs c = 0,
 *  trigonometric one c per head. (S, z, 0) is the mathematical state itself.
 *  Errors: as get_state (no aliasing rule: the triple is only read), plus
 *  PERFORMER_ERROR_INVALID_ARGUMENT for values outside these rules; state unchanged on error. */
performer_status performer_favor_decoder_set_state(
    performer_favor_decoder_t decoder, const performer_tensor_t *s, const performer_tensor_t *z,
    const performer_tensor_t *c);

#ifdef __cplusplus
}
#endif
#endif /* PERFORMER_H */
