cdef class BodyBuffer:
    cdef list chunks
    cdef public Py_ssize_t size
    cdef Py_ssize_t memory
    cdef Py_ssize_t in_memory
    cdef str directory
    cdef object file
    cdef int fd
    cdef Py_ssize_t file_size
    cdef Py_ssize_t next_chunk
    cdef Py_ssize_t file_pos

    cpdef write(self, bytes data)
    cpdef rewind(self)
    cpdef bytes read(self, Py_ssize_t n)
    cpdef close(self)


cdef class Spool:
    cdef object chunks
    cdef object tail
    cdef public object failed
    cdef Py_ssize_t memory
    cdef Py_ssize_t in_memory
    cdef str directory
    cdef Py_ssize_t max_file
    cdef object file
    cdef int fd
    cdef Py_ssize_t write_pos
    cdef Py_ssize_t read_pos

    cpdef write(self, bytes data)
    cdef inline Py_ssize_t file_unread(self)
    cpdef bint full(self)
    cpdef bytes read(self, Py_ssize_t n)
    cpdef close(self)
