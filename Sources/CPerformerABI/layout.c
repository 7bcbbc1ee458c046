/* CPerformerABI: makes include/performer.h importable by Sources/Performer, so the @_cdecl
 * functions there are written against the header's own types. This file only pins the
 * layout of the public structs: a change here is an ABI change (bump PERFORMER_ABI_VERSION). */
#include "performer.h"

#include <stddef.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(performer_tensor_t) == 80, "performer_tensor_t is 80 bytes on LP64");
_Static_assert(offsetof(performer_tensor_t, dtype) == 8, "dtype follows data");
_Static_assert(offsetof(performer_tensor_t, shape) == 16, "shape follows dtype and reserved");
_Static_assert(offsetof(performer_tensor_t, strides) == 48, "strides follow shape");
_Static_assert(sizeof(performer_softmax_options_t) == 40, "performer_softmax_options_t is 40 bytes on LP64");
_Static_assert(offsetof(performer_softmax_options_t, scale) == 16, "scale after causal, has_scale");
_Static_assert(offsetof(performer_softmax_options_t, kv_lengths) == 24, "kv_lengths after the scalars");
/* Appended fields: the older struct (32 bytes) ends where kv_starts begins, and stays accepted. */
_Static_assert(offsetof(performer_softmax_options_t, kv_starts) == 32, "kv_starts appended after kv_lengths");
_Static_assert(sizeof(performer_linear_options_t) == 48, "performer_linear_options_t is 48 bytes on LP64");
_Static_assert(offsetof(performer_linear_options_t, feature_map) == 12, "feature_map after causal");
_Static_assert(offsetof(performer_linear_options_t, eps) == 16, "eps after causal, feature_map");
_Static_assert(offsetof(performer_linear_options_t, kv_lengths) == 24, "kv_lengths after the scalars");
/* Appended fields: each older struct (32 bytes: up to kv_lengths; 40: up to kv_starts) ends where
   the next field begins, and stays accepted. */
_Static_assert(offsetof(performer_linear_options_t, kv_starts) == 32, "kv_starts appended after kv_lengths");
_Static_assert(offsetof(performer_linear_options_t, normalize) == 40, "normalize appended after kv_starts");
_Static_assert(sizeof(performer_favor_options_t) == 64, "performer_favor_options_t is 64 bytes on LP64");
_Static_assert(offsetof(performer_favor_options_t, features) == 12, "features after causal");
_Static_assert(offsetof(performer_favor_options_t, has_scale) == 16, "has_scale after features");
_Static_assert(offsetof(performer_favor_options_t, scale) == 24, "scale after has_scale (padded)");
_Static_assert(offsetof(performer_favor_options_t, eps) == 32, "eps after scale");
_Static_assert(offsetof(performer_favor_options_t, relu_offset) == 40, "relu_offset after eps");
_Static_assert(offsetof(performer_favor_options_t, kv_lengths) == 48, "kv_lengths after the scalars");
/* Appended fields: the older struct (56 bytes) ends where kv_starts begins, and stays accepted. */
_Static_assert(offsetof(performer_favor_options_t, kv_starts) == 56, "kv_starts appended after kv_lengths");
#endif
_Static_assert(sizeof(performer_status) == sizeof(int), "performer_status is int-sized");
_Static_assert(sizeof(performer_dtype) == sizeof(int), "performer_dtype is int-sized");
_Static_assert(sizeof(performer_feature_map) == sizeof(int), "performer_feature_map is int-sized");
_Static_assert(sizeof(performer_favor_projection_kind) == sizeof(int), "performer_favor_projection_kind is int-sized");
_Static_assert(sizeof(performer_favor_norms) == sizeof(int), "performer_favor_norms is int-sized");
_Static_assert(sizeof(performer_favor_feature_kind) == sizeof(int), "performer_favor_feature_kind is int-sized");
