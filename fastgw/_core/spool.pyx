# cython: language_level=3
"""Bodies held for a while: in memory up to a bound, the rest in a temporary file.

nginx's request and response buffering, memory side and disk side:
``BodyBuffer`` is a request body read whole before an upstream is chosen
(client_body_buffer_size in memory, the rest under client_body_temp_path);
``Spool`` is the part of a response the client has not taken yet
(proxy_buffers in memory, the rest under proxy_temp_path, at most
proxy_max_temp_file_size). Temporary files are unlinked as soon as they are
made, so a crash leaves nothing behind; their directory is made on first use.
Disk writes block the loop briefly, as nginx's do without aio threads.
"""

import os
import tempfile
from collections import deque

cdef set _made = set()


cdef object _temp_file(str directory):
    """An unnamed read-write temporary file in ``directory`` (made if missing). Raises OSError."""
    if directory not in _made:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _made.add(directory)
    return tempfile.TemporaryFile(mode="w+b", buffering=0, dir=directory)


cdef void _pwrite_all(int fd, bytes data, Py_ssize_t offset) except *:
    cdef Py_ssize_t done = 0, n
    cdef object view = memoryview(data)
    while done < len(data):
        n = os.pwrite(fd, view[done:], offset + done)
        done += n


cdef class BodyBuffer:
    """A whole request body, written once and read (again on a retry) from the start.

    ``memory``: bytes kept in memory before the rest goes to a temporary file in
    ``directory``. ``size``: bytes written. Raises OSError when the file cannot
    be made or written.
    """

    def __init__(self, Py_ssize_t memory, str directory):
        self.chunks = []
        self.memory = memory
        self.directory = directory
        self.fd = -1

    cpdef write(self, bytes data):
        """Append ``data`` (bytes)."""
        if not data:
            return
        if self.file is None and self.in_memory + len(data) <= self.memory:
            self.chunks.append(data)
            self.in_memory += len(data)
        else:
            if self.file is None:
                self.file = _temp_file(self.directory)
                self.fd = self.file.fileno()
            _pwrite_all(self.fd, data, self.file_size)
            self.file_size += len(data)
        self.size += len(data)

    @property
    def in_file(self):
        """Bytes that went to the temporary file."""
        return self.file_size

    cpdef rewind(self):
        """Read from the start again (a retry on another peer)."""
        self.next_chunk = 0
        self.file_pos = 0

    cpdef bytes read(self, Py_ssize_t n):
        """The next piece of the body: a memory chunk, else at most ``n`` bytes of the file;
        ``b""`` at the end."""
        cdef bytes data
        if self.next_chunk < len(self.chunks):
            data = <bytes>self.chunks[self.next_chunk]
            self.next_chunk += 1
            return data
        if self.file_pos >= self.file_size:
            return b""
        data = os.pread(self.fd, min(n, self.file_size - self.file_pos), self.file_pos)
        self.file_pos += len(data)
        return data

    cpdef close(self):
        """Drop the body and its file (idempotent)."""
        self.chunks = []
        if self.file is not None:
            self.file.close()
            self.file = None
            self.fd = -1


cdef class Spool:
    """Response bytes waiting for a slow client, first in first out.

    Up to ``memory`` bytes are kept in memory; beyond, bytes go to a temporary
    file in ``directory`` holding at most ``max_file`` unread bytes (0: no
    file). ``full()`` says the caller must stop reading the upstream. A file
    that cannot be made or written is given up (``failed`` keeps the OSError):
    later bytes wait in memory behind it and ``full()`` stops the upstream as
    if no file were allowed; nothing is lost or reordered.
    """

    def __init__(self, Py_ssize_t memory, str directory, Py_ssize_t max_file):
        self.chunks = deque()
        self.tail = deque()
        self.memory = memory
        self.directory = directory
        self.max_file = max_file
        self.fd = -1

    cpdef write(self, bytes data):
        """Append ``data`` (bytes) after everything written before."""
        if not data:
            return
        if self.file_unread() == 0 and not self.tail and (
                self.in_memory + len(data) <= self.memory or self.max_file <= 0):
            self.chunks.append(data)
            self.in_memory += len(data)
            return
        if self.max_file > 0 and self.failed is None and not self.tail:
            try:
                if self.file is None:
                    self.file = _temp_file(self.directory)
                    self.fd = self.file.fileno()
                _pwrite_all(self.fd, data, self.write_pos)
                self.write_pos += len(data)
                return
            except OSError as exc:
                # (A short write leaves write_pos where the good bytes end.)
                self.failed = exc
        # Behind the file's bytes, in memory (order kept).
        self.tail.append(data)
        self.in_memory += len(data)

    cdef inline Py_ssize_t file_unread(self):
        return self.write_pos - self.read_pos

    @property
    def size(self):
        """Bytes waiting (memory and file)."""
        return self.in_memory + self.file_unread()

    @property
    def in_file(self):
        """Bytes waiting in the temporary file."""
        return self.file_unread()

    cpdef bint full(self):
        """True when no more should be taken from the upstream until the client reads."""
        if self.max_file <= 0 or self.failed is not None:
            return self.in_memory >= self.memory
        return self.file_unread() >= self.max_file

    cpdef bytes read(self, Py_ssize_t n):
        """The oldest waiting bytes: a memory chunk, or at most ``n`` bytes of the file;
        ``b""`` when nothing waits."""
        cdef bytes data
        if self.chunks:
            data = <bytes>self.chunks.popleft()
            self.in_memory -= len(data)
            return data
        if self.file_unread() > 0:
            data = os.pread(self.fd, min(n, self.file_unread()), self.read_pos)
            if not data:
                raise OSError("temporary file shorter than written")
            self.read_pos += len(data)
            if self.read_pos == self.write_pos and self.failed is None:
                # Drained: the file starts over (and memory may be used again).
                os.ftruncate(self.fd, 0)
                self.read_pos = self.write_pos = 0
            return data
        if self.tail:
            data = <bytes>self.tail.popleft()
            self.in_memory -= len(data)
            return data
        return b""

    cpdef close(self):
        """Drop what waits and the file (idempotent)."""
        self.chunks.clear()
        self.tail.clear()
        self.in_memory = 0
        if self.file is not None:
            self.file.close()
            self.file = None
            self.fd = -1
        self.read_pos = self.write_pos = 0
