cdef enum:
    MAX_CLASSES = 16


cdef class RequestQueue:
    cdef readonly int capacity
    cdef readonly double timeout
    cdef readonly int depth
    cdef list items
    cdef int* next_
    cdef int* prev_
    cdef int* cls_
    cdef double* stamps
    cdef int* free
    cdef int nfree
    cdef int heads[MAX_CLASSES]
    cdef int tails[MAX_CLASSES]
    cdef int live[MAX_CLASSES]
    cdef public object displaced
    cdef public double last_wait
    cdef double last_pop
    cdef double busy_since
    cdef double interval
    cdef long pops

    cpdef long push(self, object item, int priority, double now) except -2
    cpdef object peek(self)
    cpdef object pop(self, double now)
    cpdef bint remove(self, long handle, object item)
    cpdef list expire(self, double now)
    cpdef double next_deadline(self)
    cpdef double expected_wait(self, int priority, double now)
    cpdef int retry_after(self, double now, int cap=*)
    cpdef int ahead(self, int priority)
    cdef object _take(self, int slot)
