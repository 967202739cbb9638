/*
 * The recognizers of the C row masker (_rowmask.c): character classes, the
 * validators, one matcher per digit-pass pattern, the email scan, the
 * de-overlap of one value's findings and the gates.
 *
 * Each matcher follows its Python pattern in recognizers.py step by step,
 * including the order in which Python's regular expression engine tries
 * alternatives and backtracks (greedy repeats longest first), so a match ends
 * where Python's does; the loops are Scanner._scan_digits, _scan_email and
 * _finish. A value is scanned with a NUL assumed before and after it (`at`).
 * Included once, by _rowmask.c (static functions, one translation unit).
 */
#ifndef WARDGATE_ROWMASK_SCAN_H
#define WARDGATE_ROWMASK_SCAN_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* entity codes (the Python side maps them to names) */
enum { E_EMAIL = 0, E_IBAN = 1, E_CARD = 2, E_SSN = 3, E_IPV4 = 4, N_ENT = 5 };
/* gates that send a row to the Python path */
enum { G_PASSWORD = 1, G_IPV6 = 2, G_PHONE = 4 };
#define FAIL (-1)
#define BAIL (-2)
#define EMAIL_BUDGET 2000 /* domain steps per address before the row goes to Python */
#define MAX_NEEDLES 64

/* character classes */
enum {
    C_DIGIT = 1, C_UPPER = 2, C_LOWER = 4, C_UNDER = 8, C_LOCALX = 16, C_HYPHEN = 32,
    C_HEX = 64, C_DOT = 128
};
static uint8_t cls[256];
static unsigned char lower[256]; /* ASCII case folding, as re.IGNORECASE on bytes */
#define IS(c, m) (cls[(unsigned char)(c)] & (m))
#define IS_DIGIT(c) IS(c, C_DIGIT)
#define IS_ALNUM(c) IS(c, C_DIGIT | C_UPPER | C_LOWER)
#define IS_WORD(c) IS(c, C_DIGIT | C_UPPER | C_LOWER | C_UNDER)
#define IS_LETTER(c) IS(c, C_UPPER | C_LOWER)
#define IS_UPDIG(c) IS(c, C_DIGIT | C_UPPER)
#define IS_LDH(c) IS(c, C_DIGIT | C_UPPER | C_LOWER | C_HYPHEN)
#define IS_LOCAL(c) IS(c, C_DIGIT | C_UPPER | C_LOWER | C_UNDER | C_LOCALX | C_HYPHEN | C_DOT)
#define IS_HEXDOT(c) IS(c, C_HEX | C_DOT)

static void init_classes(void) {
    for (int c = 0; c < 256; c++) lower[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    for (int c = '0'; c <= '9'; c++) cls[c] |= C_DIGIT | C_HEX;
    for (int c = 'A'; c <= 'Z'; c++) cls[c] |= C_UPPER;
    for (int c = 'a'; c <= 'z'; c++) cls[c] |= C_LOWER;
    for (int c = 'A'; c <= 'F'; c++) cls[c] |= C_HEX;
    for (int c = 'a'; c <= 'f'; c++) cls[c] |= C_HEX;
    cls['_'] |= C_UNDER;
    cls['%'] |= C_LOCALX;
    cls['+'] |= C_LOCALX;
    cls['-'] |= C_HYPHEN;
    cls['.'] |= C_DOT;
}

/* a byte of the value, NUL outside it */
typedef struct {
    const unsigned char *d;
    Py_ssize_t n;
} Span;
static inline int at(const Span *v, Py_ssize_t i) { return (i >= 0 && i < v->n) ? v->d[i] : 0; }

typedef struct {
    int ent;
    Py_ssize_t s, e; /* offsets in the value */
} Finding;

typedef struct {
    Finding *a;
    Py_ssize_t len, cap;
} Findings;

static int push(Findings *f, int ent, Py_ssize_t s, Py_ssize_t e) {
    if (f->len == f->cap) {
        Py_ssize_t cap = f->cap ? f->cap * 2 : 32;
        Finding *a = PyMem_Realloc(f->a, (size_t)cap * sizeof(Finding));
        if (a == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->a = a;
        f->cap = cap;
    }
    f->a[f->len].ent = ent;
    f->a[f->len].s = s;
    f->a[f->len].e = e;
    f->len++;
    return 0;
}

/* ---- validators (validators.py, recognizers.py) --------------------------------- */

static int luhn_ok(const unsigned char *dg, Py_ssize_t n) {
    static const int dbl[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    if (n == 0) return 0;
    int sum = 0;
    for (Py_ssize_t i = n - 1, k = 0; i >= 0; i--, k++) {
        int d = dg[i] - '0';
        sum += (k & 1) ? dbl[d] : d;
    }
    return sum % 10 == 0;
}

/* card_brand_ok over ASCII digits */
static int brand_ok(const unsigned char *dg, Py_ssize_t n) {
    if (n < 13 || n > 19) return 0;
    int first = dg[0];
    if (first == '4') return n == 13 || n == 16 || n == 19;
    int two = (dg[0] - '0') * 10 + (dg[1] - '0');
    if (first == '3') {
        if (two == 34 || two == 37) return n == 15;
        if (two == 35) return n >= 16;
        return (two == 30 || two == 36 || two == 38 || two == 39) && n >= 14;
    }
    if (first == '1') return n == 15 && memcmp(dg, "1800", 4) == 0;
    if (first == '5') return (51 <= two && two <= 55) ? n == 16 : n >= 12;
    if (first == '2') {
        int four = two * 100 + (dg[2] - '0') * 10 + (dg[3] - '0');
        if (n == 15) return four == 2131;
        return n == 16 && ((2221 <= four && four <= 2720) || (2200 <= four && four <= 2204));
    }
    if (first == '6') return n >= 16 || (n >= 12 && two != 60 && two != 62 && two != 64 && two != 65);
    if (first == '8') return (two == 81 || two == 82) && n == 16;
    return 0;
}

/* digits of c[0:n] into out (at most 64 kept: a card candidate has at most 19) */
static Py_ssize_t digits_of(const unsigned char *c, Py_ssize_t n, unsigned char *out) {
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n && k < 64; i++)
        if (IS_DIGIT(c[i])) out[k++] = c[i];
    return k;
}

static int card_valid(const unsigned char *c, Py_ssize_t n) {
    unsigned char dg[64];
    Py_ssize_t k = digits_of(c, n, dg);
    return brand_ok(dg, k) && luhn_ok(dg, k);
}

/* recognizers._card_validator */
static Py_ssize_t validate_card(const unsigned char *c, Py_ssize_t n) {
    if (card_valid(c, n)) return n;
    for (Py_ssize_t i = n - 1; i > 11; i--)
        if ((c[i] == ' ' || c[i] == '-') && card_valid(c, i)) return i;
    return 0;
}

/* validators.ssn_valid: the candidate is 3-2-4 digits with two separators */
static Py_ssize_t validate_ssn(const unsigned char *c, Py_ssize_t n) {
    unsigned char d[64];
    Py_ssize_t k = digits_of(c, n, d);
    if (k != 9) return 0;
    if (memcmp(d, "000", 3) == 0 || memcmp(d, "666", 3) == 0 || d[0] == '9') return 0;
    if (memcmp(d + 3, "00", 2) == 0 || memcmp(d + 5, "0000", 4) == 0) return 0;
    int same = 1;
    for (int i = 1; i < 9; i++) same &= d[i] == d[0];
    if (same || memcmp(d, "078051120", 9) == 0 || memcmp(d, "123456789", 9) == 0) return 0;
    return n;
}

/* recognizers._ipv4_validator: four dot-separated runs of 1-3 digits */
static Py_ssize_t validate_ipv4(const unsigned char *c, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t j = i;
        int value = 0;
        while (j < n && c[j] != '.') value = value * 10 + (c[j++] - '0');
        if ((j - i > 1 && c[i] == '0') || value > 255) return 0;
        i = j + 1;
    }
    return n;
}

typedef struct {
    const uint8_t *lengths; /* 26 * 26 registry lengths, 0: not listed */
} IbanTable;

/* validators.iban_valid over compact [A-Z0-9] bytes */
static int iban_valid(const IbanTable *t, const unsigned char *c, Py_ssize_t n) {
    int expected = 0;
    if (n >= 2 && IS(c[0], C_UPPER) && IS(c[1], C_UPPER))
        expected = t->lengths[(c[0] - 'A') * 26 + (c[1] - 'A')];
    if (expected == 0) {
        if (n < 15 || n > 34) return 0;
    } else if (n != expected) {
        return 0;
    }
    int rem = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char ch = c[(k + 4) % n]; /* compact[4:] + compact[:4] */
        if (IS_DIGIT(ch))
            rem = (rem * 10 + (ch - '0')) % 97;
        else if (IS(ch, C_UPPER))
            rem = (rem * 100 + (ch - 'A' + 10)) % 97;
        else
            return 0;
    }
    return rem == 1;
}

/* recognizers._iban_validator */
static Py_ssize_t validate_iban(const IbanTable *t, const unsigned char *c, Py_ssize_t n) {
    unsigned char compact[128];
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] == ' ') continue;
        if (k == (Py_ssize_t)sizeof(compact)) return BAIL; /* cannot happen: 34 at most */
        compact[k++] = c[i];
    }
    int expected = 0;
    if (k >= 2 && IS(compact[0], C_UPPER) && IS(compact[1], C_UPPER))
        expected = t->lengths[(compact[0] - 'A') * 26 + (compact[1] - 'A')];
    if (expected && k > expected) {
        Py_ssize_t seen = 0, cut = n;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (c[i] != ' ' && ++seen == expected) {
                cut = i + 1;
                break;
            }
        }
        if (cut < n && c[cut] != ' ') return 0; /* the IBAN would end inside a group */
        n = cut;
        k = expected;
    }
    return iban_valid(t, compact, k) ? n : 0;
}

/* ---- the digit pass: one matcher per pattern, at a run start p ------------------- */

/* \d _IBAN_REST: the letters before p and the first digit are the look-behind */
static Py_ssize_t match_iban(const Span *v, Py_ssize_t p) {
    if (!IS(at(v, p - 1), C_UPPER) || !IS(at(v, p - 2), C_UPPER) || IS_ALNUM(at(v, p - 3)))
        return FAIL;
    if (!IS_DIGIT(at(v, p + 1))) return FAIL;
    Py_ssize_t ends[31];
    Py_ssize_t pos = p + 2;
    int k = 0;
    while (k < 30) { /* (?: ?[A-Z0-9]){11,30}, greedy */
        if (at(v, pos) == ' ' && IS_UPDIG(at(v, pos + 1)))
            pos += 2;
        else if (IS_UPDIG(at(v, pos)))
            pos += 1;
        else
            break;
        ends[++k] = pos;
    }
    for (; k >= 11; k--) /* then (?![A-Za-z0-9]), giving back repeats */
        if (!IS_ALNUM(at(v, ends[k]))) return ends[k];
    return FAIL;
}

/* \d _CARD_REST: first digit 1-6 or 8, then (?:[ -]?\d){12,18}(?!\d) */
static Py_ssize_t match_card(const Span *v, Py_ssize_t p) {
    int first = at(v, p);
    if (first < '1' || first > '8' || first == '7') return FAIL;
    Py_ssize_t ends[19];
    Py_ssize_t pos = p + 1;
    int k = 0;
    while (k < 18) {
        int c = at(v, pos);
        if ((c == ' ' || c == '-') && IS_DIGIT(at(v, pos + 1)))
            pos += 2;
        else if (IS_DIGIT(c))
            pos += 1;
        else
            break;
        ends[++k] = pos;
    }
    for (; k >= 12; k--)
        if (!IS_DIGIT(at(v, ends[k]))) return ends[k];
    return FAIL;
}

/* \d _SSN_REST: ddd s dd s dddd, one separator kind, not after "-", not before [\d-] or .\d */
static Py_ssize_t match_ssn(const Span *v, Py_ssize_t p) {
    if (at(v, p - 1) == '-') return FAIL;
    if (!IS_DIGIT(at(v, p + 1)) || !IS_DIGIT(at(v, p + 2))) return FAIL;
    int sep = at(v, p + 3);
    if (sep != '-' && sep != ' ' && sep != '.') return FAIL;
    if (!IS_DIGIT(at(v, p + 4)) || !IS_DIGIT(at(v, p + 5)) || at(v, p + 6) != sep) return FAIL;
    for (int i = 7; i < 11; i++)
        if (!IS_DIGIT(at(v, p + i))) return FAIL;
    int next = at(v, p + 11);
    if (IS_DIGIT(next) || next == '-' || (next == '.' && IS_DIGIT(at(v, p + 12)))) return FAIL;
    return p + 11;
}

/* \d _IPV4_REST: four runs of 1-3 digits joined by dots, not inside a word or dotted run */
static Py_ssize_t match_ipv4(const Span *v, Py_ssize_t p) {
    int before = at(v, p - 1);
    if (IS_WORD(before) || before == '.') return FAIL;
    Py_ssize_t pos = p;
    for (int group = 0; group < 4; group++) {
        Py_ssize_t run = 0;
        while (IS_DIGIT(at(v, pos + run))) run++;
        if (run < 1 || run > 3) return FAIL;
        pos += run;
        if (group < 3) {
            if (at(v, pos) != '.') return FAIL;
            pos++;
        }
    }
    int next = at(v, pos);
    if (IS_WORD(next) || (next == '.' && IS_WORD(at(v, pos + 1)))) return FAIL;
    return pos;
}

static Py_ssize_t match_digit(int ent, const Span *v, Py_ssize_t p) {
    switch (ent) {
    case E_IBAN: return match_iban(v, p);
    case E_CARD: return match_card(v, p);
    case E_SSN: return match_ssn(v, p);
    default: return match_ipv4(v, p);
    }
}

static Py_ssize_t validate(const IbanTable *t, int ent, const unsigned char *c, Py_ssize_t n) {
    switch (ent) {
    case E_IBAN: return validate_iban(t, c, n);
    case E_CARD: return validate_card(c, n);
    case E_SSN: return validate_ssn(c, n);
    default: return validate_ipv4(c, n);
    }
}

static inline int lead_back(int ent) { return ent == E_IBAN ? 2 : 0; }

/* Scanner._scan_digits (and _first_other_match after a rejected candidate) */
static int scan_digits(const Span *v, const int *order, int norder, const IbanTable *t,
                       Findings *out) {
    Py_ssize_t pos = 0, n = v->n;
    for (;;) {
        Py_ssize_t p, end = FAIL;
        int which = -1;
        for (p = pos; p < n; p++) {
            if (!IS_DIGIT(v->d[p]) || IS_DIGIT(at(v, p - 1))) continue;
            for (int k = 0; k < norder; k++) {
                end = match_digit(order[k], v, p);
                if (end >= 0) {
                    which = k;
                    break;
                }
            }
            if (which >= 0) break;
        }
        if (which < 0) return 0;
        int ent = order[which];
        Py_ssize_t start = p - lead_back(ent);
        Py_ssize_t ok = validate(t, ent, v->d + start, end - start);
        if (ok == BAIL) return BAIL;
        if (ok > 0) {
            if (push(out, ent, start, start + ok) < 0) return -1;
            pos = start + ok;
            continue;
        }
        /* rejected: the first other digit recognizer that matches and validates here */
        for (int k = 0; k < norder; k++) {
            if (k == which) continue;
            int other = order[k];
            Py_ssize_t e2 = match_digit(other, v, p);
            if (e2 < 0) continue;
            Py_ssize_t s2 = p - lead_back(other);
            Py_ssize_t ok2 = validate(t, other, v->d + s2, e2 - s2);
            if (ok2 == BAIL) return BAIL;
            if (ok2 > 0) {
                if (push(out, other, s2, s2 + ok2) < 0) return -1;
                break;
            }
        }
        pos = p + 1;
    }
}

/* ---- email: Scanner._scan_email and the domain part of its pattern ---------------- */

static Py_ssize_t dom_star(const Span *v, Py_ssize_t pos, int *budget);

/* a label [A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])? at `first`, then the rest;
   its possible ends are tried longest first, as the greedy repeat does */
static Py_ssize_t dom_label(const Span *v, Py_ssize_t first, int *budget) {
    int run = 0;
    while (run < 61 && IS_LDH(at(v, first + 1 + run))) run++;
    for (int k = run; k >= 0; k--) {
        if (!IS_ALNUM(at(v, first + 1 + k))) continue;
        Py_ssize_t r = dom_star(v, first + 2 + k, budget);
        if (r != FAIL) return r;
    }
    return dom_star(v, first + 1, budget);
}

/* (?:\.label)* then \.[A-Za-z]{2,63}(?![\w-]): one more label first, else the end */
static Py_ssize_t dom_star(const Span *v, Py_ssize_t pos, int *budget) {
    if (--*budget < 0) return BAIL;
    if (at(v, pos) == '.' && IS_ALNUM(at(v, pos + 1))) {
        Py_ssize_t r = dom_label(v, pos + 1, budget);
        if (r != FAIL) return r;
    }
    if (at(v, pos) != '.') return FAIL;
    Py_ssize_t run = 0;
    while (IS_LETTER(at(v, pos + 1 + run))) run++;
    /* shorter than the run, the next byte is a letter: only the whole run can end it */
    if (run < 2 || run > 63) return FAIL;
    int next = at(v, pos + 1 + run);
    if (IS_WORD(next) || next == '-') return FAIL;
    return pos + 1 + run;
}

static int scan_email(const Span *v, Findings *out) {
    const unsigned char *d = v->d;
    Py_ssize_t n = v->n, floor = 0;
    const unsigned char *hit = memchr(d, '@', (size_t)n);
    while (hit != NULL) {
        Py_ssize_t a = hit - d;
        Py_ssize_t lo = a - 64 > floor ? a - 64 : floor;
        Py_ssize_t start = a;
        while (start > lo && IS_LOCAL(d[start - 1])) start--;
        if (start < a && !IS_LOCAL(at(v, start - 1)) && IS_ALNUM(at(v, a + 1))) {
            int budget = EMAIL_BUDGET;
            Py_ssize_t end = dom_label(v, a + 1, &budget);
            if (end == BAIL) return BAIL;
            if (end >= 0) {
                if (push(out, E_EMAIL, start, end) < 0) return -1;
                floor = end;
                hit = end < n ? memchr(d + end, '@', (size_t)(n - end)) : NULL;
                continue;
            }
        }
        hit = a + 1 < n ? memchr(d + a + 1, '@', (size_t)(n - a - 1)) : NULL;
    }
    return 0;
}

/* Scanner._finish for one value's findings (digits first, then emails): stable sort
   by start, then earliest wins and, at one start, the longest */
static void finish(Finding *f, Py_ssize_t *len) {
    Py_ssize_t n = *len;
    if (n < 2) return;
    for (Py_ssize_t i = 1; i < n; i++) { /* insertion sort: stable, lists are short */
        Finding x = f[i];
        Py_ssize_t j = i;
        while (j > 0 && f[j - 1].s > x.s) {
            f[j] = f[j - 1];
            j--;
        }
        f[j] = x;
    }
    Py_ssize_t kept = 1, last_start = f[0].s, last_end = f[0].e;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (f[i].s >= last_end) {
            f[kept++] = f[i];
            last_start = f[i].s;
            last_end = f[i].e;
        } else if (f[i].s == last_start && f[i].e > last_end) {
            f[kept - 1] = f[i];
            last_end = f[i].e;
        }
    }
    *len = kept;
}

/* ---- gates --------------------------------------------------------------------- */

typedef struct {
    const char *text;
    Py_ssize_t len;
} Needle;

#define MAX_KEYS 32

/* A `key = value` pair can be found at the separator at p (Scanner's _scan_password:
   the bytes before it, read backwards, match [ \t]{0,8}["']?KEY(?![A-Za-z0-9]) for a
   key of recognizers._PW_KEY_LIST, in any case): every split is tried */
static int key_before(const Span *v, Py_ssize_t p, const Needle *keys, int nkeys) {
    for (Py_ssize_t k = 0;; k++) { /* k blanks before the separator */
        Py_ssize_t e = p - k;
        for (int q = 0; q < 2; q++) { /* then an optional quote */
            if (q == 1 && at(v, e - 1) != '"' && at(v, e - 1) != '\'') break;
            Py_ssize_t end = e - q;
            for (int n = 0; n < nkeys; n++) {
                Py_ssize_t start = end - keys[n].len, j = 0;
                if (start < 0) continue;
                while (j < keys[n].len && lower[v->d[start + j]] == (unsigned char)keys[n].text[j])
                    j++;
                if (j == keys[n].len && !IS_ALNUM(at(v, start - 1))) return 1;
            }
        }
        int c = at(v, p - k - 1);
        if (k == 8 || (c != ' ' && c != '\t')) return 0;
    }
}

/* SQL `PASSWORD '...'`: (?<![A-Za-z0-9])password[ \t]{1,8}' at i, in any case */
static int sql_password_at(const Span *v, Py_ssize_t i) {
    static const char word[] = "password";
    for (int j = 0; j < 8; j++)
        if (lower[at(v, i + j)] != (unsigned char)word[j]) return 0;
    if (IS_ALNUM(at(v, i - 1))) return 0;
    Py_ssize_t k = i + 8;
    while (k - (i + 8) < 8 && (at(v, k) == ' ' || at(v, k) == '\t')) k++;
    return k > i + 8 && at(v, k) == '\'';
}

/* Does a recognizer C leaves to Python possibly find something in this value? Its
   literals (`needs`), a `key = value` pair, URL credentials or SQL PASSWORD (each as
   Scanner's _scan_password looks for them), an IPv6 address, a phone number */
static int gate_fires(const Span *v, const Needle *needles, int nneedles,
                      const uint64_t *first_byte, const Needle *keys, int nkeys, int gates) {
    const unsigned char *d = v->d;
    Py_ssize_t n = v->n;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = d[i];
        uint64_t mask = first_byte[c];
        while (mask) {
            int k = __builtin_ctzll(mask);
            mask &= mask - 1;
            const Needle *nd = &needles[k];
            if (nd->len <= n - i && memcmp(d + i, nd->text, (size_t)nd->len) == 0) return 1;
        }
        if (gates & G_PASSWORD) {
            if (c == ':' || c == '=') {
                if (key_before(v, i, keys, nkeys)) return 1;
                if (c == ':' && at(v, i + 1) == '/' && at(v, i + 2) == '/') return 1;
            } else if (lower[c] == 'p' && sql_password_at(v, i)) {
                return 1;
            }
        }
        if ((gates & G_IPV6) && c == ':') { /* :[0-9A-Fa-f.]{0,43}: */
            for (Py_ssize_t j = i + 1; j < n && j <= i + 44; j++) {
                if (d[j] == ':') return 1;
                if (!IS_HEXDOT(d[j])) break;
            }
        }
        if (gates & G_PHONE) { /* [0-9]{3}[ .\-][0-9]{4}|\+[1-9] */
            if (c == '+' && i + 1 < n && d[i + 1] >= '1' && d[i + 1] <= '9') return 1;
            if (IS_DIGIT(c) && i + 7 < n && IS_DIGIT(d[i + 1]) && IS_DIGIT(d[i + 2]) &&
                (d[i + 3] == ' ' || d[i + 3] == '.' || d[i + 3] == '-') && IS_DIGIT(d[i + 4]) &&
                IS_DIGIT(d[i + 5]) && IS_DIGIT(d[i + 6]) && IS_DIGIT(d[i + 7]))
                return 1;
        }
    }
    return 0;
}

#endif /* WARDGATE_ROWMASK_SCAN_H */
