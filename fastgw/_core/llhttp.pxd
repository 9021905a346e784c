# The part of llhttp's C API (fastgw/_core/vendor/llhttp, see its README) that the
# proxy drives. Field lists are partial on purpose: Cython takes the layout from
# llhttp.h, these declarations only say which members fastgw reads.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint64_t


cdef extern from "llhttp.h" nogil:
    ctypedef struct llhttp_t:
        int32_t error
        const char* reason
        void* data
        uint64_t content_length
        uint8_t type
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint16_t flags
        uint8_t upgrade
        uint16_t status_code


cdef extern from "llhttp.h":
    # Not nogil: the callbacks run with the GIL held (fastgw calls llhttp_execute
    # holding it) and touch Python objects.
    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_status
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_chunk_complete


cdef extern from "llhttp.h" nogil:
    ctypedef enum llhttp_type_t:
        HTTP_BOTH
        HTTP_REQUEST
        HTTP_RESPONSE

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_INTERNAL
        HPE_STRICT
        HPE_CR_EXPECTED
        HPE_LF_EXPECTED
        HPE_UNEXPECTED_CONTENT_LENGTH
        HPE_UNEXPECTED_SPACE
        HPE_CLOSED_CONNECTION
        HPE_INVALID_METHOD
        HPE_INVALID_URL
        HPE_INVALID_CONSTANT
        HPE_INVALID_VERSION
        HPE_INVALID_HEADER_TOKEN
        HPE_INVALID_CONTENT_LENGTH
        HPE_INVALID_CHUNK_SIZE
        HPE_INVALID_STATUS
        HPE_INVALID_EOF_STATE
        HPE_INVALID_TRANSFER_ENCODING
        HPE_CB_MESSAGE_BEGIN
        HPE_CB_HEADERS_COMPLETE
        HPE_CB_MESSAGE_COMPLETE
        HPE_CB_CHUNK_HEADER
        HPE_CB_CHUNK_COMPLETE
        HPE_PAUSED
        HPE_PAUSED_UPGRADE
        HPE_PAUSED_H2_UPGRADE
        HPE_USER

    ctypedef enum llhttp_method_t:
        HTTP_DELETE
        HTTP_GET
        HTTP_HEAD
        HTTP_CONNECT
        HTTP_QUERY

    int LLHTTP_VERSION_MAJOR
    int LLHTTP_VERSION_MINOR
    int LLHTTP_VERSION_PATCH

    void llhttp_init(llhttp_t* parser, llhttp_type_t type, const llhttp_settings_t* settings)
    void llhttp_settings_init(llhttp_settings_t* settings)
    void llhttp_reset(llhttp_t* parser)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t len)
    void llhttp_resume(llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    const char* llhttp_method_name(llhttp_method_t method)
