/* The kata-monitor body's common case, cut, looked up and read in one pass over its bytes.
 *
 * A `HeadTable` maps series heads (`name{labels}`) to the codes the Python cache gave them
 * (`add`). `table.scan(body)` accepts only a body whose every line is empty, a comment (`#`
 * first) or exactly `HEAD SP VALUE` (one space, no other ASCII whitespace: the bytes
 * Python's `bytes.split()` splits on). For such a body the Python parser's tokens are
 * exactly each data line's head and value, in line order, so this returns what it would
 * compute from them:
 *
 *   (codes, values, parsed, unknown)
 *   codes   int64 per data line: the head's code, or -3 where the table does not hold it
 *   values  float64 per data line: the value as `float()` reads it, where `parsed` is 1
 *   parsed  uint8 per data line: 1 if the value was read here (digits, sign, point, exponent,
 *           or Go's spellings NaN, +Inf, -Inf); 0 leaves it to the Python path
 *   unknown list of (line index, head) for the heads the table does not hold
 *
 * and None for any other body (the Python parser then takes it whole, line by line if need
 * be, and counts what is wrong). Nothing is decided here that the Python path would decide
 * differently: tests/collectors/test_sources.py checks that property on generated bodies.
 *
 * Lookups: a real kata-monitor sends each sandbox's lines of a family together and in a fixed
 * order, so the head after a line is most often the one that came after the same head in the
 * last body (`next`): that guess is checked byte for byte first; else the head is hashed and
 * found in an open-addressing table, and always compared whole, so a hash collision can never
 * give a wrong code. (Python's dict cost ~2.2 ms per 50-sandbox body here: SipHash over 2.2 MB
 * of heads and a bytes object per line.)
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

typedef struct {
    PyObject_HEAD
    PyObject **keys;  /* per entry: its head (a bytes object, owned) */
    uint64_t *hashes; /* per entry: hash of its head */
    int64_t *codes;   /* per entry: its code */
    Py_ssize_t *next; /* per entry: the entry after it in the last body scanned, or -1 */
    Py_ssize_t n, cap;
    Py_ssize_t *slots; /* open addressing: entry index or -1; a power of two, at most half full */
    Py_ssize_t nslots;
} HeadTable;

static uint64_t hash_bytes(const char *p, Py_ssize_t n) {
    /* 8 bytes at a time, multiply and fold: fast and spread enough for a table whose every hit
     * is confirmed by comparing the whole head */
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, (size_t)(n - i));
        h = (h ^ w) * 0x94D049BB133111EBull;
        h ^= h >> 29;
    }
    return h ^ (h >> 32);
}

static int same_head(HeadTable *t, Py_ssize_t e, const char *p, Py_ssize_t n) {
    return PyBytes_GET_SIZE(t->keys[e]) == n && memcmp(PyBytes_AS_STRING(t->keys[e]), p, (size_t)n) == 0;
}

static Py_ssize_t find(HeadTable *t, const char *p, Py_ssize_t n, uint64_t h) {
    if (!t->nslots) {
        return -1;
    }
    size_t mask = (size_t)t->nslots - 1;
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
        Py_ssize_t e = t->slots[s];
        if (e < 0) {
            return -1;
        }
        if (t->hashes[e] == h && same_head(t, e, p, n)) {
            return e;
        }
    }
}

static void place(HeadTable *t, Py_ssize_t e) {
    size_t mask = (size_t)t->nslots - 1;
    size_t s = (size_t)t->hashes[e] & mask;
    while (t->slots[s] >= 0) {
        s = (s + 1) & mask;
    }
    t->slots[s] = e;
}

static int grow(HeadTable *t) {
    Py_ssize_t cap = t->cap ? t->cap * 2 : 1024;
    PyObject **keys = PyMem_Realloc(t->keys, sizeof(PyObject *) * (size_t)cap);
    if (keys) t->keys = keys;
    uint64_t *hashes = PyMem_Realloc(t->hashes, sizeof(uint64_t) * (size_t)cap);
    if (hashes) t->hashes = hashes;
    int64_t *codes = PyMem_Realloc(t->codes, sizeof(int64_t) * (size_t)cap);
    if (codes) t->codes = codes;
    Py_ssize_t *next = PyMem_Realloc(t->next, sizeof(Py_ssize_t) * (size_t)cap);
    if (next) t->next = next;
    Py_ssize_t *slots = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)cap * 2);
    if (!keys || !hashes || !codes || !next || !slots) {
        PyMem_Free(slots);
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->nslots = cap * 2;
    t->cap = cap;
    for (Py_ssize_t s = 0; s < t->nslots; s++) {
        slots[s] = -1;
    }
    for (Py_ssize_t e = 0; e < t->n; e++) {
        place(t, e);
    }
    return 0;
}

static PyObject *table_add(HeadTable *t, PyObject *args) {
    PyObject *head;
    long long code;
    if (!PyArg_ParseTuple(args, "SL", &head, &code)) {
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(head);
    Py_ssize_t n = PyBytes_GET_SIZE(head);
    uint64_t h = hash_bytes(p, n);
    Py_ssize_t e = find(t, p, n, h);
    if (e >= 0) {
        t->codes[e] = code;
        Py_RETURN_NONE;
    }
    if (t->n == t->cap && grow(t) < 0) {
        return NULL;
    }
    e = t->n++;
    Py_INCREF(head);
    t->keys[e] = head;
    t->hashes[e] = h;
    t->codes[e] = code;
    t->next[e] = -1;
    place(t, e);
    Py_RETURN_NONE;
}

static Py_ssize_t table_len(HeadTable *t) { return t->n; }

static void table_dealloc(HeadTable *t) {
    for (Py_ssize_t e = 0; e < t->n; e++) {
        Py_DECREF(t->keys[e]);
    }
    PyMem_Free(t->keys);
    PyMem_Free(t->hashes);
    PyMem_Free(t->codes);
    PyMem_Free(t->next);
    PyMem_Free(t->slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static void free_buffers(int64_t *codes, double *values, unsigned char *parsed) {
    PyMem_Free(codes);
    PyMem_Free(values);
    PyMem_Free(parsed);
}

static PyObject *table_scan(HeadTable *t, PyObject *args) {
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "y*", &body)) {
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
    Py_ssize_t n = 0, pos = 0, prev = -1;
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
        Py_ssize_t guess = prev >= 0 ? t->next[prev] : -1;
        Py_ssize_t e = guess >= 0 && same_head(t, guess, line, sp) ? guess : find(t, line, sp, hash_bytes(line, sp));
        if (prev >= 0) {
            t->next[prev] = e; /* what follows it in this body: the guess for the next one */
        }
        prev = e;
        if (e >= 0) {
            codes[n] = t->codes[e];
        } else {
            codes[n] = UNKNOWN;
            PyObject *item = Py_BuildValue("(ny#)", n, line, sp);
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

static PyMethodDef table_methods[] = {
    {"add", (PyCFunction)table_add, METH_VARARGS, "add(head, code): the code of a head (replaces an earlier one)."},
    {"scan", (PyCFunction)table_scan, METH_VARARGS, "scan(body): a body's data lines cut, looked up and read."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods table_as_sequence = {.sq_length = (lenfunc)table_len};

static PyTypeObject HeadTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectors._expfmt.HeadTable",
    .tp_basicsize = sizeof(HeadTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Series heads -> codes, and the scan of a kata-monitor body (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_as_sequence = &table_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_expfmt", "The kata-monitor body's common case in one pass over its bytes.", -1, NULL,
};

PyMODINIT_FUNC PyInit__expfmt(void) {
    if (PyType_Ready(&HeadTableType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (!m) {
        return NULL;
    }
    Py_INCREF(&HeadTableType);
    if (PyModule_AddObject(m, "HeadTable", (PyObject *)&HeadTableType) < 0) {
        Py_DECREF(&HeadTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
