/*
 * wardgate.masking._rowmask: the DataRow masker's hot path in C (optional).
 *
 * Theory of operation: `RowMasker.mask(body)` does for one DataRow body what
 * ResultMasker._mask_body does in Python, for the recognizers it implements
 * exactly (EMAIL_ADDRESS; the digit pass: IBAN_CODE, CREDIT_CARD, US_SSN and
 * IPv4 IP_ADDRESS) and the column rules: one walk over the length words, a scan
 * of every scanned value, validators on candidates, replacements, one output
 * buffer. Every other recognizer of the plan (secrets, `key=value` pairs, IPv6,
 * phone numbers) is covered by a *gate*: a necessary condition for it to find
 * anything (its `needs` literals; a key name before ":" or "=", "://" or SQL
 * `PASSWORD '`, as _scan_password looks for them; two colons with only hex
 * digits and dots between; three digits, a separator and four digits, or "+"
 * and a digit). When a gate fires anywhere in the row, `mask` returns None
 * before it has counted or changed anything, and the caller masks the row with
 * the Python path. A malformed body, or an email address whose
 * domain needs more backtracking than a small budget, also returns None.
 *
 * The matchers (_rowmask_scan.h) follow the Python patterns of recognizers.py
 * step by step, so each match ends where Python's does. Values are scanned one
 * at a time with a NUL assumed before and after each (the Python body path
 * scans them NUL-separated in one buffer; no built-in pattern matches a NUL).
 * tests/masking/test_native_path.py compares the two paths on generated rows.
 *
 * The caller holds the GIL for the whole call (nothing here releases it), and a
 * RowMasker belongs to one result, so its scratch arrays need no locking.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_rowmask_scan.h"

/* column modes: the numbers of masker.py */
enum {
    M_SKIP = 0, M_SCAN_TEXT = 1, M_SCAN_NULL = 2, M_INT8_BIN = 6, M_NUMERIC_BIN = 7,
    M_RULE_TEXT = 10, M_RULE_JSON = 11, M_RULE_JSONB_BIN = 12, M_RULE_NULL = 13
};
/* replacer kinds */
enum { R_NONE = 0, R_CONST = 1, R_LAST4 = 2, R_CALL = 3 };

/* ---- the RowMasker type ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int ncols;
    uint8_t *modes;      /* per column */
    PyObject **rules;    /* per column: the rule's replacer (bytes or callable), or NULL */
    int order[4];        /* the digit recognizers, in the scanner's order */
    int norder;
    int email;
    int gates;
    int busy; /* inside mask/mask_run (a replacer may run Python code) */
    Needle needles[MAX_NEEDLES];
    int nneedles;
    PyObject *needle_keep; /* the bytes the needles point into */
    Needle keys[MAX_KEYS]; /* the key names of `key = value` pairs, lower case */
    int nkeys;
    PyObject *keys_keep;
    uint64_t first_byte[256];
    int rkind[N_ENT];
    PyObject *repl[N_ENT]; /* bytes (constant) or callable, per entity */
    uint8_t iban_lengths[26 * 26];
    /* counts, read by the Python summary */
    long long rows;
    long long *counts; /* ncols * N_ENT */
    long long *nulled;
    long long *rule_counts;
    /* scratch */
    Py_ssize_t *starts;
    Py_ssize_t *ends;
    PyObject **newval; /* per column: NULL unchanged, Py_None NULL, else bytes */
    Findings found;
    Py_ssize_t *col_first; /* per column: first finding index, then count */
    Py_ssize_t *col_count;
} RowMasker;

static void RowMasker_dealloc(RowMasker *self) {
    if (self->rules) {
        for (int i = 0; i < self->ncols; i++) Py_XDECREF(self->rules[i]);
    }
    for (int k = 0; k < N_ENT; k++) Py_XDECREF(self->repl[k]);
    Py_XDECREF(self->needle_keep);
    Py_XDECREF(self->keys_keep);
    PyMem_Free(self->modes);
    PyMem_Free(self->rules);
    PyMem_Free(self->counts);
    PyMem_Free(self->nulled);
    PyMem_Free(self->rule_counts);
    PyMem_Free(self->starts);
    PyMem_Free(self->ends);
    PyMem_Free(self->newval);
    PyMem_Free(self->found.a);
    PyMem_Free(self->col_first);
    PyMem_Free(self->col_count);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int add_needle(RowMasker *self, const char *text, Py_ssize_t len) {
    if (len < 1) {
        PyErr_SetString(PyExc_ValueError, "empty gate literal");
        return -1;
    }
    if (self->nneedles == MAX_NEEDLES) {
        PyErr_SetString(PyExc_ValueError, "too many gate literals");
        return -1;
    }
    int k = self->nneedles++;
    self->needles[k].text = text;
    self->needles[k].len = len;
    self->first_byte[(unsigned char)text[0]] |= 1ULL << k;
    return 0;
}

/*
 * RowMasker(modes: bytes, rules: tuple, digits: tuple[int], email: bool, gates: int,
 *           needles: tuple[bytes], replacers: tuple (per entity: None, bytes, 2 for the
 *           last four digits, or a callable), iban_lengths: bytes of 676)
 */
static int RowMasker_init(RowMasker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"modes", "rules", "digits", "email", "gates", "needles",
                         "keys", "replacers", "iban_lengths", NULL};
    PyObject *modes, *rules, *digits, *needles, *keys, *replacers, *iban;
    int email, gates;
    if (self->modes != NULL) {
        PyErr_SetString(PyExc_TypeError, "RowMasker is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SO!O!piO!O!O!S", kw, &modes, &PyTuple_Type,
                                     &rules, &PyTuple_Type, &digits, &email, &gates,
                                     &PyTuple_Type, &needles, &PyTuple_Type, &keys,
                                     &PyTuple_Type, &replacers, &iban))
        return -1;
    Py_ssize_t ncols = PyBytes_GET_SIZE(modes);
    if (ncols > 32767 || PyTuple_GET_SIZE(rules) != ncols) {
        PyErr_SetString(PyExc_ValueError, "modes and rules: one per column");
        return -1;
    }
    if (PyTuple_GET_SIZE(replacers) != N_ENT || PyBytes_GET_SIZE(iban) != 26 * 26) {
        PyErr_SetString(PyExc_ValueError, "bad replacers or IBAN table");
        return -1;
    }
    self->ncols = (int)ncols;
    size_t n = (size_t)(ncols ? ncols : 1);
    self->modes = PyMem_Malloc(n);
    self->rules = PyMem_Calloc(n, sizeof(PyObject *));
    self->counts = PyMem_Calloc(n * N_ENT, sizeof(long long));
    self->nulled = PyMem_Calloc(n, sizeof(long long));
    self->rule_counts = PyMem_Calloc(n, sizeof(long long));
    self->starts = PyMem_Calloc(n, sizeof(Py_ssize_t));
    self->ends = PyMem_Calloc(n, sizeof(Py_ssize_t));
    self->newval = PyMem_Calloc(n, sizeof(PyObject *));
    self->col_first = PyMem_Calloc(n, sizeof(Py_ssize_t));
    self->col_count = PyMem_Calloc(n, sizeof(Py_ssize_t));
    if (!self->modes || !self->rules || !self->counts || !self->nulled || !self->rule_counts ||
        !self->starts || !self->ends || !self->newval || !self->col_first || !self->col_count) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(self->modes, PyBytes_AS_STRING(modes), (size_t)ncols);
    for (Py_ssize_t i = 0; i < ncols; i++) {
        int m = self->modes[i];
        PyObject *r = PyTuple_GET_ITEM(rules, i);
        int ruled = m >= M_RULE_TEXT;
        if (m != M_SKIP && m != M_SCAN_TEXT && m != M_SCAN_NULL && m != M_INT8_BIN &&
            m != M_NUMERIC_BIN && !(ruled && m <= M_RULE_NULL)) {
            PyErr_SetString(PyExc_ValueError, "unknown column mode");
            return -1;
        }
        if (ruled && m != M_RULE_NULL) {
            if (!PyBytes_Check(r) && !PyCallable_Check(r)) {
                PyErr_SetString(PyExc_TypeError, "a rule's replacer is bytes or callable");
                return -1;
            }
            Py_INCREF(r);
            self->rules[i] = r;
        }
    }
    Py_ssize_t nd = PyTuple_GET_SIZE(digits);
    if (nd > 4) {
        PyErr_SetString(PyExc_ValueError, "at most four digit recognizers");
        return -1;
    }
    for (Py_ssize_t k = 0; k < nd; k++) {
        long e = PyLong_AsLong(PyTuple_GET_ITEM(digits, k));
        if (e == -1 && PyErr_Occurred()) return -1;
        if (e < E_IBAN || e > E_IPV4) {
            PyErr_SetString(PyExc_ValueError, "unknown digit recognizer");
            return -1;
        }
        self->order[k] = (int)e;
    }
    self->norder = (int)nd;
    self->email = email;
    self->gates = gates;
    /* the needles point into the bytes kept in needle_keep */
    Py_ssize_t nn = PyTuple_GET_SIZE(needles);
    Py_INCREF(needles);
    self->needle_keep = needles;
    for (Py_ssize_t k = 0; k < nn; k++) {
        PyObject *b = PyTuple_GET_ITEM(needles, k);
        if (!PyBytes_Check(b)) {
            PyErr_SetString(PyExc_TypeError, "gate literals are bytes");
            return -1;
        }
        if (add_needle(self, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)) < 0) return -1;
    }
    Py_ssize_t nk = PyTuple_GET_SIZE(keys);
    if (nk > MAX_KEYS || ((gates & G_PASSWORD) && nk == 0)) {
        PyErr_SetString(PyExc_ValueError, "the password gate needs 1 to 32 key names");
        return -1;
    }
    Py_INCREF(keys);
    self->keys_keep = keys;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *b = PyTuple_GET_ITEM(keys, k);
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) < 1) {
            PyErr_SetString(PyExc_TypeError, "key names are non-empty bytes");
            return -1;
        }
        const char *t = PyBytes_AS_STRING(b);
        for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(b); j++) {
            if (lower[(unsigned char)t[j]] != (unsigned char)t[j]) {
                PyErr_SetString(PyExc_ValueError, "key names are lower case");
                return -1;
            }
        }
        self->keys[k].text = t;
        self->keys[k].len = PyBytes_GET_SIZE(b);
    }
    self->nkeys = (int)nk;
    for (int k = 0; k < N_ENT; k++) {
        PyObject *r = PyTuple_GET_ITEM(replacers, k);
        if (r == Py_None) {
            self->rkind[k] = R_NONE;
            continue;
        }
        if (PyBytes_Check(r))
            self->rkind[k] = R_CONST;
        else if (PyLong_Check(r) && PyLong_AsLong(r) == R_LAST4)
            self->rkind[k] = R_LAST4;
        else if (PyCallable_Check(r))
            self->rkind[k] = R_CALL;
        else {
            PyErr_SetString(PyExc_TypeError, "a replacer is None, bytes, 2 or callable");
            return -1;
        }
        Py_INCREF(r);
        self->repl[k] = r;
    }
    /* an entity that is scanned for needs a replacer */
    if ((email && self->rkind[E_EMAIL] == R_NONE)) {
        PyErr_SetString(PyExc_ValueError, "no replacer for a scanned entity");
        return -1;
    }
    for (int k = 0; k < self->norder; k++) {
        if (self->rkind[self->order[k]] == R_NONE) {
            PyErr_SetString(PyExc_ValueError, "no replacer for a scanned entity");
            return -1;
        }
    }
    memcpy(self->iban_lengths, PyBytes_AS_STRING(iban), 26 * 26);
    return 0;
}

/* the value `span` replaced for entity `ent` (a new reference) */
static PyObject *replace(RowMasker *self, int ent, const unsigned char *s, Py_ssize_t n) {
    switch (self->rkind[ent]) {
    case R_CONST:
        Py_INCREF(self->repl[ent]);
        return self->repl[ent];
    case R_LAST4: { /* every digit a star but the last four digits */
        PyObject *out = PyBytes_FromStringAndSize((const char *)s, n);
        if (out == NULL) return NULL;
        char *o = PyBytes_AS_STRING(out);
        int kept = 0;
        for (Py_ssize_t i = n - 1; i >= 0; i--) {
            if (!IS_DIGIT(o[i])) continue;
            if (kept < 4)
                kept++;
            else
                o[i] = '*';
        }
        return out;
    }
    default: {
        PyObject *arg = PyBytes_FromStringAndSize((const char *)s, n);
        if (arg == NULL) return NULL;
        PyObject *out = PyObject_CallOneArg(self->repl[ent], arg);
        Py_DECREF(arg);
        if (out != NULL && !PyBytes_Check(out)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "a replacer returned something else than bytes");
            return NULL;
        }
        return out;
    }
    }
}

/* a column rule's replacement of value v (a new reference) */
static PyObject *rule_value(RowMasker *self, int col, const unsigned char *v, Py_ssize_t n) {
    int mode = self->modes[col];
    if (mode == M_RULE_NULL) {
        Py_RETURN_NONE;
    }
    const unsigned char *arg = v;
    Py_ssize_t argn = n;
    if (mode == M_RULE_JSONB_BIN && n > 0) { /* version byte, then JSON text */
        arg++;
        argn--;
    }
    PyObject *r = self->rules[col], *masked;
    if (PyBytes_Check(r)) {
        Py_INCREF(r);
        masked = r;
    } else {
        PyObject *a = PyBytes_FromStringAndSize((const char *)arg, argn);
        if (a == NULL) return NULL;
        masked = PyObject_CallOneArg(r, a);
        Py_DECREF(a);
        if (masked == NULL) return NULL;
        if (!PyBytes_Check(masked)) {
            Py_DECREF(masked);
            PyErr_SetString(PyExc_TypeError, "a replacer returned something else than bytes");
            return NULL;
        }
    }
    if (mode == M_RULE_TEXT) return masked;
    const char *pre = mode == M_RULE_JSON ? "\"" : "\x01\"";
    Py_ssize_t plen = mode == M_RULE_JSON ? 1 : 2, mlen = PyBytes_GET_SIZE(masked);
    PyObject *out = PyBytes_FromStringAndSize(NULL, plen + mlen + 1);
    if (out != NULL) {
        char *o = PyBytes_AS_STRING(out);
        memcpy(o, pre, (size_t)plen);
        memcpy(o + plen, PyBytes_AS_STRING(masked), (size_t)mlen);
        o[plen + mlen] = '"';
    }
    Py_DECREF(masked);
    return out;
}

static inline int32_t be32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}

static void clear_newvals(RowMasker *self) {
    for (int i = 0; i < self->ncols; i++) Py_CLEAR(self->newval[i]);
}

enum { ROW_SAME = 0, ROW_CHANGED = 1, ROW_PYTHON = 2, ROW_ERROR = -1 };

/* One DataRow body: ROW_SAME, ROW_CHANGED (newval[] holds the changed values and
   *out_size the masked body's size; write_body() writes it), ROW_PYTHON (a gate
   fired, or the body is malformed: nothing was counted) or ROW_ERROR (exception set) */
static int mask_core(RowMasker *self, const unsigned char *b, Py_ssize_t size,
                     Py_ssize_t *out_size) {
    int ncols = self->ncols;
    /* the walk: framing is checked as a whole, as bodypath.walker does */
    if (size < 2 || ((b[0] << 8) | b[1]) != ncols) return ROW_PYTHON;
    Py_ssize_t pos = 2;
    for (int i = 0; i < ncols; i++) {
        if (size - pos < 4) return ROW_PYTHON;
        int32_t len = be32(b + pos);
        pos += 4;
        self->starts[i] = pos;
        if (len < -1) return ROW_PYTHON;
        if (len > 0) {
            if (len > size - pos) return ROW_PYTHON;
            pos += len;
        }
        self->ends[i] = pos;
    }
    if (pos != size) return ROW_PYTHON;
    /* binary int8 / numeric: a value of 13 digits or more may spell a card number and
     * is scanned as its text by the Python path; smaller ones are skipped here */
    for (int i = 0; i < ncols; i++) {
        int m = self->modes[i];
        if (m != M_INT8_BIN && m != M_NUMERIC_BIN) continue;
        if (b[self->starts[i] - 4] == 0xFF) continue; /* NULL */
        const unsigned char *v = b + self->starts[i];
        Py_ssize_t vlen = self->ends[i] - self->starts[i];
        if (m == M_INT8_BIN) {
            uint32_t hi;
            if (vlen != 8) return ROW_PYTHON;
            hi = ((uint32_t)v[0] << 24) | ((uint32_t)v[1] << 16) | ((uint32_t)v[2] << 8) | v[3];
            /* |value| < 0xE8 << 32 (996,432,412,672): below 10^12 */
            if (hi >= 0x000000E8u && hi < 0xFFFFFF18u) return ROW_PYTHON;
        } else {
            /* digit count (Int16) >= 4 groups, or weight (Int16) >= 3: 10^12 and up */
            if (vlen < 8 || v[0] || v[1] >= 4 || (v[2] < 0x80 && (v[2] || v[3] >= 3)))
                return ROW_PYTHON;
        }
    }
    /* the gates first: nothing is counted or changed before the row is ours */
    if (self->nneedles || self->gates) {
        for (int i = 0; i < ncols; i++) {
            int m = self->modes[i];
            if (m != M_SCAN_TEXT && m != M_SCAN_NULL) continue;
            Span v = {b + self->starts[i], self->ends[i] - self->starts[i]};
            if (v.n && gate_fires(&v, self->needles, self->nneedles, self->first_byte,
                                  self->keys, self->nkeys, self->gates))
                return ROW_PYTHON;
        }
    }
    IbanTable table = {self->iban_lengths};
    Findings *found = &self->found;
    found->len = 0;
    for (int i = 0; i < ncols; i++) {
        int m = self->modes[i];
        self->col_first[i] = found->len;
        self->col_count[i] = 0;
        if (m != M_SCAN_TEXT && m != M_SCAN_NULL) continue;
        Span v = {b + self->starts[i], self->ends[i] - self->starts[i]};
        if (v.n == 0) continue;
        Py_ssize_t first = found->len;
        int rc = self->norder ? scan_digits(&v, self->order, self->norder, &table, found) : 0;
        if (rc == 0 && self->email && memchr(v.d, '@', (size_t)v.n) != NULL)
            rc = scan_email(&v, found);
        if (rc == BAIL) return ROW_PYTHON;
        if (rc < 0) return ROW_ERROR;
        Py_ssize_t len = found->len - first;
        finish(found->a + first, &len);
        found->len = first + len;
        self->col_count[i] = len;
    }
    self->rows++;
    int changed = 0;
    for (int i = 0; i < ncols; i++) {
        Py_ssize_t nf = self->col_count[i];
        int m = self->modes[i];
        const unsigned char *v = b + self->starts[i];
        Py_ssize_t vlen = self->ends[i] - self->starts[i];
        if (m >= M_RULE_TEXT) {
            if (b[self->starts[i] - 4] == 0xFF) continue; /* NULL: nothing to mask */
            self->rule_counts[i]++;
            if (m == M_RULE_NULL) self->nulled[i]++;
            PyObject *nv = rule_value(self, i, v, vlen);
            if (nv == NULL) goto error;
            self->newval[i] = nv;
            changed = 1;
            continue;
        }
        if (nf == 0) continue;
        Finding *f = found->a + self->col_first[i];
        long long *counts = self->counts + (size_t)i * N_ENT;
        changed = 1;
        if (m == M_SCAN_NULL) { /* a masked span would not parse as the type */
            for (Py_ssize_t k = 0; k < nf; k++) counts[f[k].ent]++;
            self->nulled[i]++;
            Py_INCREF(Py_None);
            self->newval[i] = Py_None;
            continue;
        }
        if (nf == 1 && f[0].s == 0 && f[0].e == vlen) { /* the whole value: the common case */
            counts[f[0].ent]++;
            PyObject *nv = replace(self, f[0].ent, v, vlen);
            if (nv == NULL) goto error;
            self->newval[i] = nv;
            continue;
        }
        /* the replacements, then one buffer with the stretches between them */
        PyObject *small[8];
        PyObject **reps = nf <= 8 ? small : PyMem_Malloc((size_t)nf * sizeof(PyObject *));
        if (reps == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        Py_ssize_t total = vlen, k;
        for (k = 0; k < nf; k++) {
            counts[f[k].ent]++;
            reps[k] = replace(self, f[k].ent, v + f[k].s, f[k].e - f[k].s);
            if (reps[k] == NULL) break;
            total += PyBytes_GET_SIZE(reps[k]) - (f[k].e - f[k].s);
        }
        PyObject *nv = NULL;
        if (k == nf) {
            nv = PyBytes_FromStringAndSize(NULL, total);
            if (nv != NULL) {
                char *o = PyBytes_AS_STRING(nv);
                Py_ssize_t last = 0;
                for (Py_ssize_t j = 0; j < nf; j++) {
                    memcpy(o, v + last, (size_t)(f[j].s - last));
                    o += f[j].s - last;
                    Py_ssize_t rl = PyBytes_GET_SIZE(reps[j]);
                    memcpy(o, PyBytes_AS_STRING(reps[j]), (size_t)rl);
                    o += rl;
                    last = f[j].e;
                }
                memcpy(o, v + last, (size_t)(vlen - last));
            }
        }
        for (Py_ssize_t j = 0; j < k; j++) Py_DECREF(reps[j]);
        if (reps != small) PyMem_Free(reps);
        if (nv == NULL) goto error;
        self->newval[i] = nv;
    }
    if (!changed) return ROW_SAME;
    Py_ssize_t total = size;
    for (int i = 0; i < ncols; i++) {
        PyObject *nv = self->newval[i];
        if (nv == NULL) continue;
        total -= self->ends[i] - self->starts[i];
        if (nv != Py_None) {
            Py_ssize_t l = PyBytes_GET_SIZE(nv);
            if (l > INT32_MAX || total > PY_SSIZE_T_MAX - l) {
                PyErr_SetString(PyExc_OverflowError, "masked value too long");
                goto error;
            }
            total += l;
        }
    }
    *out_size = total;
    return ROW_CHANGED;
error:
    clear_newvals(self);
    return ROW_ERROR;
}

/* the masked body of a ROW_CHANGED row into o (its *out_size bytes); newval[] cleared */
static void write_body(RowMasker *self, const unsigned char *b, Py_ssize_t size,
                       unsigned char *o) {
    Py_ssize_t copied = 0;
    for (int i = 0; i < self->ncols; i++) {
        PyObject *nv = self->newval[i];
        if (nv == NULL) continue;
        Py_ssize_t word = self->starts[i] - 4;
        memcpy(o, b + copied, (size_t)(word - copied));
        o += word - copied;
        if (nv == Py_None) {
            memset(o, 0xFF, 4);
            o += 4;
        } else {
            Py_ssize_t l = PyBytes_GET_SIZE(nv);
            o[0] = (unsigned char)(l >> 24);
            o[1] = (unsigned char)(l >> 16);
            o[2] = (unsigned char)(l >> 8);
            o[3] = (unsigned char)l;
            memcpy(o + 4, PyBytes_AS_STRING(nv), (size_t)l);
            o += 4 + l;
        }
        copied = self->ends[i];
    }
    memcpy(o, b + copied, (size_t)(size - copied));
    clear_newvals(self);
}

/* the masked body, a new reference; the body itself when nothing changed; None: the
   Python path must take this row (a gate fired, the body is malformed, or the masker
   is in use: a replacer called back into Python and another caller came in) */
static PyObject *RowMasker_mask(RowMasker *self, PyObject *body) {
    if (!PyBytes_CheckExact(body) || self->busy) Py_RETURN_NONE;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(body);
    Py_ssize_t size = PyBytes_GET_SIZE(body), out_size = 0;
    self->busy = 1;
    int rc = mask_core(self, b, size, &out_size);
    PyObject *result = NULL;
    if (rc == ROW_SAME) {
        Py_INCREF(body);
        result = body;
    } else if (rc == ROW_PYTHON) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else if (rc == ROW_CHANGED) {
        result = PyBytes_FromStringAndSize(NULL, out_size);
        if (result == NULL)
            clear_newvals(self);
        else
            write_body(self, b, size, (unsigned char *)PyBytes_AS_STRING(result));
    }
    self->busy = 0;
    return result;
}

typedef struct {
    unsigned char *p;
    Py_ssize_t len, cap;
} Out;

static int out_reserve(Out *out, Py_ssize_t more) {
    if (out->cap - out->len >= more) return 0;
    if (more > PY_SSIZE_T_MAX / 2 - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = out->cap ? out->cap : 4096;
    while (cap - out->len < more) cap *= 2;
    unsigned char *p = PyMem_Realloc(out->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->p = p;
    out->cap = cap;
    return 0;
}

/* mask_run(run, start): the whole DataRow messages of `run` from offset `start`, masked
   one by one, up to the end or to the first message the Python path must take.
   Returns (masked messages, offset reached): `run` itself when it was all masked from
   0 with no change; otherwise new bytes for run[start:offset] as masked */
static PyObject *RowMasker_mask_run(RowMasker *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "mask_run(run: bytes, start: int)");
        return NULL;
    }
    PyObject *run = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(run);
    Py_ssize_t size = PyBytes_GET_SIZE(run);
    if (start < 0 || start > size) {
        PyErr_SetString(PyExc_ValueError, "start is outside the run");
        return NULL;
    }
    if (self->busy) return Py_BuildValue("(y#n)", "", (Py_ssize_t)0, start);
    self->busy = 1;
    Out out = {NULL, 0, 0};
    int dirty = 0; /* out holds run[start:pos] as masked */
    Py_ssize_t pos = start;
    PyObject *result = NULL;
    while (pos < size) {
        if (size - pos < 5 || r[pos] != 'D') goto bad_run;
        uint32_t length = (uint32_t)be32(r + pos + 1);
        if (length < 4 || (Py_ssize_t)length > size - pos - 1) goto bad_run;
        const unsigned char *body = r + pos + 5;
        Py_ssize_t body_size = (Py_ssize_t)length - 4, out_size = 0;
        int rc = mask_core(self, body, body_size, &out_size);
        if (rc == ROW_ERROR) goto done;
        if (rc == ROW_PYTHON) break;
        if (rc == ROW_SAME) {
            if (dirty) {
                if (out_reserve(&out, 1 + (Py_ssize_t)length) < 0) goto done;
                memcpy(out.p + out.len, r + pos, 1 + (size_t)length);
                out.len += 1 + (Py_ssize_t)length;
            }
        } else {
            if (out_size > INT32_MAX - 4) {
                clear_newvals(self);
                PyErr_SetString(PyExc_OverflowError, "masked row too long");
                goto done;
            }
            Py_ssize_t before = dirty ? 0 : pos - start;
            if (out_reserve(&out, before + 5 + out_size) < 0) {
                clear_newvals(self);
                goto done;
            }
            if (!dirty) { /* the unchanged messages so far */
                memcpy(out.p, r + start, (size_t)before);
                out.len = before;
                dirty = 1;
            }
            unsigned char *o = out.p + out.len;
            uint32_t l = (uint32_t)out_size + 4;
            o[0] = 'D';
            o[1] = (unsigned char)(l >> 24);
            o[2] = (unsigned char)(l >> 16);
            o[3] = (unsigned char)(l >> 8);
            o[4] = (unsigned char)l;
            write_body(self, body, body_size, o + 5);
            out.len += 5 + out_size;
        }
        pos += 1 + (Py_ssize_t)length;
    }
    if (dirty)
        result = Py_BuildValue("(y#n)", (const char *)out.p, out.len, pos);
    else if (start == 0 && pos == size)
        result = Py_BuildValue("(On)", run, pos);
    else
        result = Py_BuildValue("(y#n)", (const char *)r + start, pos - start, pos);
    goto done;
bad_run:
    PyErr_SetString(PyExc_ValueError, "not a run of whole DataRow messages");
done:
    PyMem_Free(out.p);
    self->busy = 0;
    return result;
}

/* (rows, counts per column per entity, nulled per column, rule values per column) */
static PyObject *RowMasker_stats(RowMasker *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *counts = PyList_New(self->ncols);
    PyObject *nulled = PyList_New(self->ncols);
    PyObject *ruled = PyList_New(self->ncols);
    if (counts == NULL || nulled == NULL || ruled == NULL) goto error;
    for (int i = 0; i < self->ncols; i++) {
        PyObject *row = PyTuple_New(N_ENT);
        if (row == NULL) goto error;
        PyList_SET_ITEM(counts, i, row);
        for (int k = 0; k < N_ENT; k++) {
            PyObject *c = PyLong_FromLongLong(self->counts[(size_t)i * N_ENT + k]);
            if (c == NULL) goto error;
            PyTuple_SET_ITEM(row, k, c);
        }
        PyObject *a = PyLong_FromLongLong(self->nulled[i]);
        if (a == NULL) goto error;
        PyList_SET_ITEM(nulled, i, a);
        PyObject *r = PyLong_FromLongLong(self->rule_counts[i]);
        if (r == NULL) goto error;
        PyList_SET_ITEM(ruled, i, r);
    }
    return Py_BuildValue("(LNNN)", self->rows, counts, nulled, ruled);
error:
    Py_XDECREF(counts);
    Py_XDECREF(nulled);
    Py_XDECREF(ruled);
    return NULL;
}

static PyMethodDef RowMasker_methods[] = {
    {"mask", (PyCFunction)RowMasker_mask, METH_O,
     "mask(body) -> the masked DataRow body, the same object when unchanged, or None "
     "when the Python path must take the row"},
    {"mask_run", (PyCFunction)(void (*)(void))RowMasker_mask_run, METH_FASTCALL,
     "mask_run(run, start) -> (masked messages, offset reached): whole DataRow messages "
     "from `start`, up to the end or the first one the Python path must take"},
    {"stats", (PyCFunction)RowMasker_stats, METH_NOARGS,
     "stats() -> (rows, counts[column][entity], nulled[column], rule values[column])"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RowMaskerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wardgate.masking._rowmask.RowMasker",
    .tp_basicsize = sizeof(RowMasker),
    .tp_dealloc = (destructor)RowMasker_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The DataRow masker of one result, for the recognizers implemented in C.",
    .tp_methods = RowMasker_methods,
    .tp_init = (initproc)RowMasker_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wardgate.masking._rowmask",
    .m_doc = "The DataRow masker's hot path in C (see masking/native.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__rowmask(void) {
    init_classes();
    if (PyType_Ready(&RowMaskerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RowMaskerType);
    if (PyModule_AddObject(m, "RowMasker", (PyObject *)&RowMaskerType) < 0) {
        Py_DECREF(&RowMaskerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ABI", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
