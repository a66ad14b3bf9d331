#ifndef INSIGHT_CNGHTTP2_SHIM_H
#define INSIGHT_CNGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>

#if defined(__linux__)
#include <malloc.h>
/* The usable size of a block from the C library's allocator (for the nghttp2 allocator,
   H2MemoryPool.reallocate). */
static inline size_t insight_malloc_usable_size(void *block) { return malloc_usable_size(block); }
#elif defined(__APPLE__)
#include <malloc/malloc.h>
static inline size_t insight_malloc_usable_size(void *block) { return malloc_size(block); }
#endif
#endif
