cpdef bytes normalize_path(bytes path)
cpdef bytes normalize_host(bytes host)


cdef class Router:
    cdef dict exact
    cdef list prefixes
    cdef list regexes
    cpdef object match(self, bytes path)


cdef class VirtualHosts:
    cdef dict exact
    cdef list wild_front
    cdef list wild_back
    cdef list regexes
    cdef public object default
    cpdef object find(self, bytes host)
