// SwiftPM needs one source file per C target; everything is inline in the header.
#include "performer_kernel_intrinsics.h"
