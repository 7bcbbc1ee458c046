/* Lets libperformer.so load on glibc 2.31 (manylinux_2_31: Debian 11, Ubuntu 20.04) although it
 * is linked on a newer one (docs/INSTALL.md, "Python: ... manylinux"). Linked into the C library
 * only (the Performer target), never into a Swift package that depends on PerformerCore.
 *
 * The linker binds an unversioned reference to the default version of the libc it links
 * against. glibc 2.34 moved pthread_* and dl* into libc.so.6 under the new version GLIBC_2.34
 * and 2.33 made stat a libc.so.6 symbol (GLIBC_2.33); GCC 11's libstdc++ headers call
 * std::__throw_bad_array_new_length (GLIBCXX_3.4.29). The Swift runtime (libswiftCore.a, linked
 * in statically) and the thread pool reference these, so the library would need glibc 2.34.
 * Each definition here satisfies those references inside the library (exports.map keeps it
 * local) and calls the symbol's old version, which glibc and libstdc++ keep for compatibility:
 * on glibc < 2.34 it is found in libpthread.so.0 / libdl.so.2 (the library lists them as
 * needed), on newer ones in libc.so.6. */
#if defined(__linux__)
#include <features.h> /* defines __GLIBC__ (not on musl) */
#endif
/* Sanitizer builds (tests only, never shipped) keep the default bindings: ASan and TSan
 * intercept pthread_create and dlopen by name, and a call bound to an old version would pass
 * them by. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PERFORMER_SANITIZED_BUILD 1
#endif
#endif
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(PERFORMER_SANITIZED_BUILD)

struct stat;
typedef unsigned long pthread_t_compat;

/* The versions of x86-64 glibc's first release (GLIBC_2.2.5). */
__asm__(".symver performer_old_pthread_create, pthread_create@GLIBC_2.2.5");
__asm__(".symver performer_old_pthread_detach, pthread_detach@GLIBC_2.2.5");
__asm__(".symver performer_old_pthread_mutex_trylock, pthread_mutex_trylock@GLIBC_2.2.5");
__asm__(".symver performer_old_dlopen, dlopen@GLIBC_2.2.5");
__asm__(".symver performer_old_dlsym, dlsym@GLIBC_2.2.5");
__asm__(".symver performer_old_dladdr, dladdr@GLIBC_2.2.5");
__asm__(".symver performer_old_dlerror, dlerror@GLIBC_2.2.5");
__asm__(".symver performer_old_xstat, __xstat@GLIBC_2.2.5");

int performer_old_pthread_create(pthread_t_compat *, const void *, void *(*)(void *), void *);
int performer_old_pthread_detach(pthread_t_compat);
int performer_old_pthread_mutex_trylock(void *);
void *performer_old_dlopen(const char *, int);
void *performer_old_dlsym(void *, const char *);
int performer_old_dladdr(const void *, void *);
char *performer_old_dlerror(void);
int performer_old_xstat(int, const char *, struct stat *);

int pthread_create(pthread_t_compat *thread, const void *attr, void *(*start)(void *), void *arg) {
    return performer_old_pthread_create(thread, attr, start, arg);
}
int pthread_detach(pthread_t_compat thread) { return performer_old_pthread_detach(thread); }
int pthread_mutex_trylock(void *mutex) { return performer_old_pthread_mutex_trylock(mutex); }
void *dlopen(const char *file, int mode) { return performer_old_dlopen(file, mode); }
void *dlsym(void *handle, const char *name) { return performer_old_dlsym(handle, name); }
int dladdr(const void *address, void *info) { return performer_old_dladdr(address, info); }
char *dlerror(void) { return performer_old_dlerror(); }

/* Before 2.33, stat was a static wrapper (libc_nonshared.a) around __xstat with version 1. */
int stat(const char *path, struct stat *buf) { return performer_old_xstat(1, path, buf); }

/* std::__throw_bad_array_new_length(): libstdc++ < 3.4.29 lacks it; throw its base class,
 * std::bad_alloc, through the old entry point. Reached only by a new[] whose size overflows. */
__attribute__((noreturn)) void _ZSt17__throw_bad_allocv(void);
__attribute__((noreturn)) void _ZSt28__throw_bad_array_new_lengthv(void) { _ZSt17__throw_bad_allocv(); }

#endif
