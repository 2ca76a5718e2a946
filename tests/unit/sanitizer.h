/* tests/unit/sanitizer.h — DTL_TEST_SANITIZED is defined in a build with AddressSanitizer,
 * MemorySanitizer or ThreadSanitizer: what a test must then leave alone (counting mallocs
 * behind the sanitizer's own allocator) is skipped, saying so. */
#ifndef DTL_TEST_SANITIZER_H
#define DTL_TEST_SANITIZER_H

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DTL_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(thread_sanitizer)
#define DTL_TEST_SANITIZED 1
#endif
#endif

#endif
