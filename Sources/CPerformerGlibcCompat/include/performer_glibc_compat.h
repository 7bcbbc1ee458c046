/* CPerformerGlibcCompat has no API: its object file is linked into libperformer.so only, where
 * its definitions take the place of libc symbols that would need glibc 2.33/2.34 or libstdc++
 * 3.4.29 (glibc_compat.c). This header exists because SwiftPM gives every C target one. */
#ifndef PERFORMER_GLIBC_COMPAT_H
#define PERFORMER_GLIBC_COMPAT_H
#endif
