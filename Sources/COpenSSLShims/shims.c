/* SwiftPM needs one source file in a C target; the shims are all static inline in the header. */
#include "COpenSSLShims.h"
