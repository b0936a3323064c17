# Window arithmetic shared by the kernels: for a row of windows, which output
# positions (or kernel taps) land inside the input. Computing these ranges once
# per row keeps bounds tests out of the innermost loops.

cdef inline Py_ssize_t first_inside(Py_ssize_t offset, Py_ssize_t step) noexcept nogil:
    """Smallest o >= 0 with ``o * step + offset >= 0``."""
    if offset >= 0:
        return 0
    return (step - 1 - offset) // step


cdef inline Py_ssize_t end_inside(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size) noexcept nogil:
    """Smallest o >= 0 with ``o * step + offset >= size``."""
    if offset >= size:
        return 0
    return (size - offset + step - 1) // step


cdef inline Py_ssize_t clip(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v
