# Byte searches for the hot path, in C.
#
# Why not `needle in haystack`: on CPython 3.11, `bytes in bytes` first tries the
# needle as an integer, which raises and clears a TypeError with a formatted
# message each time (~0.3 us). The hot path asks such questions several times per
# request (router, header names, header values), so it asks memchr/memmem instead.

cdef extern from "string.h" nogil:
    void* memchr(const void* s, int c, size_t n)
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)


cdef inline bint has_byte(bytes s, unsigned char c):
    """True if byte ``c`` occurs in ``s``."""
    return memchr(<const char*>s, c, len(s)) != NULL


cdef inline bint has_sub(bytes s, bytes sub):
    """True if ``sub`` occurs in ``s`` (``sub in s`` without the exception)."""
    return memmem(<const char*>s, len(s), <const char*>sub, len(sub)) != NULL


cdef inline bint has_crlf_nul(bytes s):
    """True if ``s`` holds CR, LF or NUL: bytes that would split or end a header line."""
    cdef const unsigned char* p = <const unsigned char*>(<const char*>s)
    cdef Py_ssize_t i
    for i in range(len(s)):
        if p[i] == 13 or p[i] == 10 or p[i] == 0:
            return True
    return False
