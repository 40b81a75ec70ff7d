/* The kata-monitor body's common case, cut and looked up in one pass over its bytes.
 *
 * `scan(body, series)` accepts only a body whose every line is empty, a comment (`#` first)
 * or exactly `HEAD SP VALUE` (one space, no other ASCII whitespace: the bytes Python's
 * `bytes.split()` splits on). For such a body the Python parser's tokens are exactly each
 * data line's head and value, in line order, so this returns what it would compute from them:
 *
 *   (codes, values, parsed, unknown)
 *   codes   int64 per data line: `series[head]`, or -3 where the head is not in `series`
 *   values  float64 per data line: the value as `float()` reads it, where `parsed` is 1
 *   parsed  uint8 per data line: 1 if the value was read here (digits, sign, point, exponent,
 *           or Go's spellings NaN, +Inf, -Inf); 0 leaves it to the Python path
 *   unknown list of (line index, head) for the heads not in `series`
 *
 * and None for any other body (the Python parser then takes it whole, line by line if need
 * be, and counts what is wrong). Nothing is decided here that the Python path would decide
 * differently: tests/collectors/test_expfmt.py checks that property on generated bodies.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define UNKNOWN (-3)
#define MAX_VALUE 64 /* longer values are left to the Python path */

/* The bytes other than space and newline that `bytes.split()` splits on. A body with any of
 * them anywhere (a comment included) goes to the Python path; without them, a line's only
 * whitespace is its spaces, and memchr finds those far faster than a loop over every byte. */
static const char OTHER_SPACE[] = {'\t', '\r', '\x0b', '\x0c'};

/* The value token [p, p + n) as float() reads it; 0 if it is not a form this accepts. */
static int read_value(const char *p, Py_ssize_t n, double *out) {
    char buf[MAX_VALUE + 1];
    char *end = NULL;
    if (n <= 0 || n > MAX_VALUE) {
        return 0;
    }
    /* a plain integer of at most 15 digits is below 2^53: exact as a double, so the same
     * as float() gives, without its correctly rounded decimal conversion (most values) */
    Py_ssize_t i = (p[0] == '-' || p[0] == '+') ? 1 : 0;
    if (n - i >= 1 && n - i <= 15) {
        int64_t acc = 0;
        Py_ssize_t j = i;
        for (; j < n && p[j] >= '0' && p[j] <= '9'; j++) {
            acc = acc * 10 + (p[j] - '0');
        }
        if (j == n) {
            *out = p[0] == '-' ? -(double)acc : (double)acc;
            return 1;
        }
    }
    if ((n == 3 && memcmp(p, "NaN", 3) == 0) || (n == 4 && memcmp(p, "+Inf", 4) == 0) ||
        (n == 4 && memcmp(p, "-Inf", 4) == 0)) {
        /* the spellings Go's exposition writer uses; float() reads them so */
    } else {
        for (Py_ssize_t k = 0; k < n; k++) {
            char c = p[k];
            if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
                return 0;
            }
        }
    }
    memcpy(buf, p, (size_t)n);
    buf[n] = '\0';
    double v = PyOS_string_to_double(buf, &end, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear(); /* not a number: the Python path counts it */
        return 0;
    }
    if (end != buf + n) {
        return 0;
    }
    *out = v;
    return 1;
}

static void free_buffers(int64_t *codes, double *values, unsigned char *parsed) {
    PyMem_Free(codes);
    PyMem_Free(values);
    PyMem_Free(parsed);
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer body;
    PyObject *series;
    if (!PyArg_ParseTuple(args, "y*O!", &body, &PyDict_Type, &series)) {
        return NULL;
    }
    const char *b = (const char *)body.buf;
    const Py_ssize_t size = body.len;
    /* at most one data line per newline, plus a last line without one */
    Py_ssize_t cap = 1;
    for (const char *q = memchr(b, '\n', (size_t)size); q; q = memchr(q + 1, '\n', (size_t)(b + size - q - 1))) {
        cap++;
    }
    int64_t *codes = PyMem_Malloc(sizeof(int64_t) * (size_t)cap);
    double *values = PyMem_Malloc(sizeof(double) * (size_t)cap);
    unsigned char *parsed = PyMem_Malloc((size_t)cap);
    PyObject *unknown = PyList_New(0);
    if (!codes || !values || !parsed || !unknown) {
        free_buffers(codes, values, parsed);
        Py_XDECREF(unknown);
        PyBuffer_Release(&body);
        return PyErr_NoMemory();
    }
    Py_ssize_t n = 0, pos = 0;
    int ok = 1;
    for (size_t k = 0; k < sizeof(OTHER_SPACE); k++) {
        if (memchr(b, OTHER_SPACE[k], (size_t)size)) {
            ok = 0;
        }
    }
    while (pos < size && ok) {
        const char *line = b + pos;
        const char *nl = memchr(line, '\n', (size_t)(size - pos));
        Py_ssize_t len = nl ? (Py_ssize_t)(nl - line) : size - pos;
        pos += len + 1;
        if (len == 0 || line[0] == '#') {
            continue;
        }
        const char *space = memchr(line, ' ', (size_t)len);
        Py_ssize_t sp = space ? (Py_ssize_t)(space - line) : -1;
        if (sp <= 0 || sp == len - 1 || memchr(space + 1, ' ', (size_t)(len - sp - 1))) {
            ok = 0; /* not exactly `head value` */
            break;
        }
        PyObject *head = PyBytes_FromStringAndSize(line, sp);
        if (!head) {
            goto fail;
        }
        PyObject *code = PyDict_GetItemWithError(series, head); /* borrowed */
        if (code) {
            long long c = PyLong_AsLongLong(code);
            if (c == -1 && PyErr_Occurred()) {
                Py_DECREF(head);
                goto fail;
            }
            codes[n] = c;
            Py_DECREF(head);
        } else if (PyErr_Occurred()) {
            Py_DECREF(head);
            goto fail;
        } else {
            codes[n] = UNKNOWN;
            PyObject *item = Py_BuildValue("(nN)", n, head); /* steals head */
            if (!item || PyList_Append(unknown, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
        parsed[n] = (unsigned char)read_value(line + sp + 1, len - sp - 1, &values[n]);
        if (!parsed[n]) {
            values[n] = 0.0;
        }
        n++;
    }
    PyBuffer_Release(&body);
    if (!ok) {
        free_buffers(codes, values, parsed);
        Py_DECREF(unknown);
        Py_RETURN_NONE;
    }
    PyObject *out = Py_BuildValue("(y#y#y#N)", (const char *)codes, n * (Py_ssize_t)sizeof(int64_t),
                                  (const char *)values, n * (Py_ssize_t)sizeof(double), (const char *)parsed, n,
                                  unknown);
    free_buffers(codes, values, parsed);
    return out;

fail:
    PyBuffer_Release(&body);
    free_buffers(codes, values, parsed);
    Py_DECREF(unknown);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Cut a kata-monitor body's data lines and look up their heads (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_expfmt", "The kata-monitor body's common case in one pass over its bytes.", -1, methods,
};

PyMODINIT_FUNC PyInit__expfmt(void) { return PyModule_Create(&module); }
