# HTTP/1.1 constants and helpers shared by the hot path.

cdef bytes status_line(int code, bytes reason=*)
cdef bytes date_header()
cdef bint is_hop_by_hop(bytes lname)
cdef bint is_idempotent(bytes method)
cdef bytes local_response(int code, bint keep_alive, bint http11, bytes extra_headers=*,
                          bytes body=*, bint head_only=*)
