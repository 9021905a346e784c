from libc.stdint cimport uint64_t
from fastgw._core.balancer cimport Peer
from fastgw._core.pool cimport UpstreamPool
from fastgw._core.router cimport Router, VirtualHosts
from fastgw._core.counters cimport Stats
from fastgw._core.spool cimport BodyBuffer, Spool


cdef class Wheel:
    cdef object loop
    cdef dict slots
    cdef long done
    cdef object handle

    cdef arm(self, object conn, double delay)
    cdef cancel(self, object conn)


cdef class Runtime:
    cdef public object loop
    cdef public Wheel wheel
    cdef public object error_log
    cdef public set connections
    cdef public int worker_connections
    cdef public int active
    cdef public long conn_counter
    cdef public long requests_total
    cdef public bint shutting_down
    cdef public object on_drained
    cdef public bytes pid
    cdef public object upstream_factory
    cdef public object refuse_throttle
    cdef public Stats stats
    cdef public dict pages
    cdef public dict lingering

    cdef void conn_closed(self, object conn)


cdef class Location:
    cdef public object conf
    cdef public int kind
    cdef public UpstreamPool pool
    cdef public bytes prefix
    cdef public bint exact
    cdef public bytes uri
    cdef public bytes uri_args
    cdef public tuple set_headers
    cdef public frozenset skip
    cdef public bytes proxy_host
    cdef public bytes proxy_port
    cdef public bint upstream_http10
    cdef public double connect_timeout
    cdef public double send_timeout
    cdef public double read_timeout
    cdef public double keepalive_timeout
    cdef public long keepalive_requests
    cdef public double body_timeout
    cdef public double client_send_timeout
    cdef public long max_body
    cdef public tuple add_headers
    cdef public list access_logs
    cdef public object error_log
    cdef public int ret_code
    cdef public tuple ret_parts
    cdef public double min_timeout
    cdef public int priority
    # limit_req: ((LimitTable, key parts, rate, burst, delay, zone name, Throttle), ...)
    cdef public tuple limit_reqs
    cdef public int limit_req_status
    cdef public str limit_req_level
    cdef public str limit_req_delay_level
    cdef public bint limit_req_dry
    cdef public bint limit_redis
    # limit_conn: ((LimitTable, key parts, max, zone name, Throttle), ...)
    cdef public tuple limit_conns
    cdef public int limit_conn_status
    cdef public str limit_conn_level
    cdef public bint limit_conn_dry
    # proxy_next_upstream conditions (NU_* bits), tries (0: no limit), timeout (s, 0: none)
    cdef public int next_upstream
    cdef public int next_tries
    cdef public double next_timeout
    # proxy_set_header sets Upgrade (nginx's WebSocket idiom): a client's WebSocket
    # upgrade is forwarded, and tunnelled once the upstream answers 101.
    cdef public bint upgrade
    # proxy_request_buffering, client_body_buffer_size (bytes), client_body_temp_path.
    cdef public bint request_buffering
    cdef public long body_buffer_size
    cdef public str body_temp_path
    # proxy_buffering, proxy_buffers (total bytes), proxy_max_temp_file_size, proxy_temp_path.
    cdef public bint response_buffering
    cdef public long proxy_buffers_size
    cdef public long max_temp_file
    cdef public str proxy_temp_path


cdef class Server:
    cdef public object conf
    cdef public Router router
    cdef public Location not_found
    cdef public Location ret
    cdef public bytes name
    cdef public double header_timeout
    cdef public long header_buffer_size
    cdef public long header_buffers
    cdef public double keepalive_timeout
    cdef public double min_timeout
    cdef public object error_log


cdef class Listener:
    cdef public Runtime rt
    cdef public VirtualHosts vhosts
    cdef public dict by_addr
    cdef public object sock
    cdef public bytes server_addr
    cdef public bytes server_port
    cdef public bint accepting

    cdef _refuse(self, sock)


cdef class Request:
    cdef public bytes method
    cdef public bytes url
    cdef public list headers
    cdef public bytes host
    # normalize_host(host), set when the request is routed (None before)
    cdef public bytes host_norm
    cdef public bytes content_length
    cdef public bytes te
    cdef public bint expect_continue
    cdef public bint http11
    cdef public bint keep_alive
    cdef public bint conn_close
    cdef public bint head_done
    cdef public bint body_done
    cdef public bint done
    cdef public bint chunked
    cdef public bint close_after
    cdef public bint retried
    cdef public bint head_only
    cdef public bint response_started
    cdef public Location location
    cdef public Server server
    cdef public bytes uri
    cdef public bytes args
    cdef public double start
    cdef public int status
    cdef public long body_received
    cdef public long bytes_sent
    cdef public long head_bytes_sent
    cdef public long head_size
    cdef public list body_buf
    cdef public long body_buffered
    cdef public object upstream
    cdef public str upstream_addr
    # One [address (bytes), status, connect s, header s, response s] per peer tried
    # ($upstream_*; -1: not reached); None when no upstream was tried.
    cdef public list upstream_tries
    cdef public int upstream_status
    cdef public int error_status
    cdef public bytes referer
    cdef public bytes user_agent
    cdef public bytes xff
    cdef public bytes request_line
    cdef public object conn
    cdef public long queue_handle
    cdef public double queued_at
    cdef public bytes limit_req_status
    cdef public bytes limit_conn_status
    cdef public list limit_conn_held
    cdef public object limit_timer
    cdef public double queue_time
    cdef public str overload
    # Retries (proxy_next_upstream): peers tried (None before the first retry),
    # attempts made, when the first started, the balancer's key hash.
    cdef public object tried
    cdef public int tries
    cdef public double first_try
    cdef public uint64_t hash_key
    # Body bytes already sent upstream and kept to send again on a retry (at
    # most KEEP_BODY bytes); body_lost once some went out that were not kept.
    cdef public list body_kept
    cdef public long kept_bytes
    cdef public bint body_lost
    # The client asked for a WebSocket upgrade (GET, HTTP/1.1, Upgrade: websocket,
    # Connection: upgrade); upgrade: it was forwarded upstream (the location allows it).
    cdef public bint conn_upgrade
    cdef public bytes upgrade_hdr
    cdef public bint upgrade_asked
    cdef public bint upgrade
    # proxy_request_buffering: the body read whole before a peer is chosen.
    cdef public BodyBuffer body_buffer
    cdef public bint buffering
