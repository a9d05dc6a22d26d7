"""Numba kernels for feature windows: pure functions on NumPy arrays, compiled with cache=True.

Owns the arithmetic of every window statistic; `batch.py` and `streaming.py` are thin Python
wrappers that check shapes and dtypes and call `window_stats` through `batch_stats` /
`batch_stats_serial`, so the edge and training compute a window with the very same code.
Imports only numpy and numba (never pandas, connectors/, models/, ui/, simulators/). Importing
this module imports numba (~0.3 s), so the rest of pq imports it lazily.

Array conventions (checked by the wrappers, not here):
    ts      int64   nanoseconds since the epoch (UTC), sorted ascending inside each group
    val     float64
    status  uint32  OPC UA status code; a sample is usable iff (status & bad_mask) == 0 and finite
Output row of `window_stats` (column indices mirrored in spec.K_*):
    0 n_good, 1 n_bad, 2 mean, 3 std, 4 min, 5 max, 6 first, 7 last, 8 range, 9 slope,
    10 time_above, 11 time_below, 12 ewma
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

N_COLS = 13
_NAN = np.nan


@njit(cache=True, nogil=True)
def lower_bound(ts, lo, hi, x):
    """First index i in [lo, hi) with ts[i] >= x (hi if none). ts sorted ascending."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def upper_bound(ts, lo, hi, x):
    """First index i in [lo, hi) with ts[i] > x (hi if none). ts sorted ascending."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def window_stats(ts, val, status, lo, hi, we, lim_lo, lim_hi, alpha, min_good, bad_mask, out):
    """All statistics of samples [lo, hi) in one pass; writes `out[0:13]`.

    - duplicated timestamps: only the first sample of a run of equal ts counts (first wins);
    - unusable samples (bad status bits or non-finite value) are counted in n_bad, excluded;
    - time above/below: each usable sample's value holds until the next sample of any status
      (or the window end `we`), so time under bad quality counts as neither;
    - fewer than `min_good` usable samples -> every statistic NaN (counts still written);
      std and slope need 2; time_above/below are NaN when their limit is NaN.
    """
    n = 0
    nbad = 0
    k = 0.0  # value shift (first good value) for numerically stable sums
    t0 = 0  # time shift (first good ts)
    sx = 0.0
    sxx = 0.0
    st = 0.0
    stt = 0.0
    stx = 0.0
    mn = np.inf
    mx = -np.inf
    first = _NAN
    last = _NAN
    ew = _NAN
    t_above = 0.0
    t_below = 0.0
    prev_ts = 0
    prev_v = 0.0
    prev_ok = False
    one_m_alpha = 1.0 - alpha
    for i in range(lo, hi):
        tsi = ts[i]
        if i > lo and tsi == ts[i - 1]:
            continue
        if prev_ok:
            d = (tsi - prev_ts) * 1e-9
            if prev_v > lim_hi:
                t_above += d
            if prev_v < lim_lo:
                t_below += d
        v = val[i]
        ok = (status[i] & bad_mask) == 0 and np.isfinite(v)
        prev_ts = tsi
        prev_v = v
        prev_ok = ok
        if not ok:
            nbad += 1
            continue
        if n == 0:
            k = v
            t0 = tsi
            first = v
            ew = v
        else:
            ew = one_m_alpha * ew + alpha * v
        n += 1
        x = v - k
        t = (tsi - t0) * 1e-9
        sx += x
        sxx += x * x
        st += t
        stt += t * t
        stx += t * x
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        last = v
    if prev_ok:
        d = (we - prev_ts) * 1e-9
        if d > 0.0:
            if prev_v > lim_hi:
                t_above += d
            if prev_v < lim_lo:
                t_below += d
    out[0] = n
    out[1] = nbad
    if n < min_good or n == 0:
        for c in range(2, N_COLS):
            out[c] = _NAN
        return
    out[2] = k + sx / n
    if n >= 2:
        var = (sxx - sx * sx / n) / (n - 1)
        out[3] = np.sqrt(var) if var > 0.0 else 0.0
        sttc = stt - st * st / n
        out[9] = (stx - st * sx / n) / sttc if sttc > 0.0 else _NAN
    else:
        out[3] = _NAN
        out[9] = _NAN
    out[4] = mn
    out[5] = mx
    out[6] = first
    out[7] = last
    out[8] = mx - mn
    out[10] = t_above if lim_hi == lim_hi else _NAN
    out[11] = t_below if lim_lo == lim_lo else _NAN
    out[12] = ew


@njit(cache=True, nogil=True)
def _part_group(kk, ts, val, status, grp_start, grp_end, part_key, wlo, whi,
                g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out):
    """Work item kk = p * n_groups + j: window_stats of group j (tag g_tag[j], window g_win[j])
    for part p into out[p, j].

    part_key[p] is the base key of the part's line (key of tag t = part_key[p] + t), or -1 when
    the line has no samples at all. grp_start/grp_end[key] bound that (line, tag)'s samples.
    wlo/whi[p, w] are window bounds in ns; the window is (wlo, whi]: a sample stamped exactly at
    the cycle end (per-cycle values written at cycle end) belongs to the cycle that just ended.
    """
    n_groups = out.shape[1]
    p = kk // n_groups
    j = kk - p * n_groups
    t = g_tag[j]
    w = g_win[j]
    base = part_key[p]
    a = 0
    b = 0
    lim_lo = _NAN
    lim_hi = _NAN
    if base >= 0:
        key = base + t
        a = grp_start[key]
        b = grp_end[key]
        lim_lo = key_lim_lo[key]
        lim_hi = key_lim_hi[key]
    ws = wlo[p, w]
    we = whi[p, w]
    lo = upper_bound(ts, a, b, ws)
    hi = upper_bound(ts, lo, b, we) if we > ws else lo
    window_stats(ts, val, status, lo, hi, we, lim_lo, lim_hi, g_alpha[j], g_min[j],
                 bad_mask, out[p, j])


@njit(cache=True, parallel=True, nogil=True)
def batch_stats(ts, val, status, grp_start, grp_end, part_key, wlo, whi,
                g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out):
    """out[p, j, :] for every part p and group j, in parallel (training, backfill)."""
    for kk in prange(out.shape[0] * out.shape[1]):
        _part_group(kk, ts, val, status, grp_start, grp_end, part_key, wlo, whi,
                    g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out)


@njit(cache=True, nogil=True)
def batch_stats_serial(ts, val, status, grp_start, grp_end, part_key, wlo, whi,
                       g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out):
    """Same as batch_stats on the calling thread (the edge: one part, no thread-pool wake-up).
    A separate function on purpose: numba's disk cache keys by function, so one Python function
    compiled twice (parallel and serial) would load the wrong variant from the cache."""
    for kk in range(out.shape[0] * out.shape[1]):
        _part_group(kk, ts, val, status, grp_start, grp_end, part_key, wlo, whi,
                    g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out)


@njit(cache=True, nogil=True)
def check_grouped_sorted(keys, ts):
    """True iff keys are non-decreasing and ts is non-decreasing inside each key run."""
    for i in range(1, keys.shape[0]):
        if keys[i] < keys[i - 1]:
            return False
        if keys[i] == keys[i - 1] and ts[i] < ts[i - 1]:
            return False
    return True


@njit(cache=True, nogil=True)
def group_bounds(keys, n_keys):
    """For keys sorted ascending (negative = dropped, must come first): start/end per key."""
    start = np.zeros(n_keys, np.int64)
    end = np.zeros(n_keys, np.int64)
    n = keys.shape[0]
    i = 0
    while i < n:
        k = keys[i]
        j = i
        while j < n and keys[j] == k:
            j += 1
        if k >= 0:
            start[k] = i
            end[k] = j
        i = j
    return start, end


@njit(cache=True, nogil=True)
def make_keys(tcodes, tlut, lcodes, llut, n_tags):
    """key = line index * n_tags + tag index from categorical codes and lookup tables (-1 = drop)."""
    n = tcodes.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        tc = tcodes[i]
        lc = lcodes[i]
        t = tlut[tc] if tc >= 0 else -1
        ln = llut[lc] if lc >= 0 else -1
        keys[i] = ln * n_tags + t if (t >= 0 and ln >= 0) else -1
    return keys


@njit(cache=True, parallel=True, nogil=True)
def group_scatter(keys, n_keys, n_chunks, ts, val, status):
    """Stable parallel counting sort of the three sample arrays by key (key < 0 dropped).
    Returns (ts, val, status, start, end) with samples of key k in [start[k], end[k])."""
    n = keys.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    counts = np.zeros((n_chunks, n_keys), np.int64)
    for c in prange(n_chunks):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            k = keys[i]
            if k >= 0:
                counts[c, k] += 1
    start = np.zeros(n_keys, np.int64)
    end = np.zeros(n_keys, np.int64)
    off = np.zeros((n_chunks, n_keys), np.int64)
    pos = 0
    for k in range(n_keys):
        start[k] = pos
        for c in range(n_chunks):
            off[c, k] = pos
            pos += counts[c, k]
        end[k] = pos
    ts2 = np.empty(pos, ts.dtype)
    v2 = np.empty(pos, val.dtype)
    s2 = np.empty(pos, status.dtype)
    for c in prange(n_chunks):
        o = off[c].copy()
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            k = keys[i]
            if k >= 0:
                j = o[k]
                ts2[j] = ts[i]
                v2[j] = val[i]
                s2[j] = status[i]
                o[k] = j + 1
    return ts2, v2, s2, start, end


@njit(cache=True, nogil=True)
def count_duplicates(ts, start, end):
    """Samples whose ts equals the previous one in the same group (skipped by window_stats)."""
    d = 0
    for g in range(start.shape[0]):
        for i in range(start[g] + 1, end[g]):
            if ts[i] == ts[i - 1]:
                d += 1
    return d


@njit(cache=True, nogil=True)
def unsorted_groups(ts, start, end):
    """Indices of groups whose ts is not non-decreasing."""
    bad = np.zeros(start.shape[0], np.bool_)
    for g in range(start.shape[0]):
        for i in range(start[g] + 1, end[g]):
            if ts[i] < ts[i - 1]:
                bad[g] = True
                break
    return np.nonzero(bad)[0]


# ---- streaming ring buffers ---------------------------------------------------------------------
# Per tag t the live samples are ts2d[t, head[t]:tail[t]], sorted by ts, at most `cap` of them;
# the row length is L = 2 * cap so appends are amortised O(1) (compaction moves <= cap samples
# once every >= cap appends). counters[t] = appended, duplicates, late_inserted, too_old, evicted.
C_APPENDED, C_DUPLICATE, C_LATE, C_TOO_OLD, C_EVICTED = 0, 1, 2, 3, 4
N_COUNTERS = 5


@njit(cache=True, nogil=True)
def _compact(ts2d, val2d, st2d, t, h, e):
    n = e - h
    for i in range(n):
        ts2d[t, i] = ts2d[t, h + i]
        val2d[t, i] = val2d[t, h + i]
        st2d[t, i] = st2d[t, h + i]


@njit(cache=True, nogil=True)
def ring_push(ts2d, val2d, st2d, head, tail, evicted_max, counters, cap, t, ts_in, v_in, s_in):
    """Push samples of tag t. Out-of-order samples are inserted in ts order; a duplicated ts is
    dropped (first wins, like the store's ON CONFLICT DO NOTHING); when `cap` samples are held the
    oldest is evicted (evicted_max[t] remembers the newest evicted ts); a sample older than an
    evicted one, or older than everything in a full buffer, is dropped as too old."""
    L = ts2d.shape[1]
    h = head[t]
    e = tail[t]
    row = ts2d[t]
    for i in range(ts_in.shape[0]):
        x = ts_in[i]
        pos = e
        if e > h and x <= row[e - 1]:
            if x == row[e - 1]:
                counters[t, C_DUPLICATE] += 1
                continue
            pos = lower_bound(row, h, e, x)
            if row[pos] == x:
                counters[t, C_DUPLICATE] += 1
                continue
            if x <= evicted_max[t] or (pos == h and e - h >= cap):
                counters[t, C_TOO_OLD] += 1
                continue
        if e - h >= cap:
            if row[h] > evicted_max[t]:
                evicted_max[t] = row[h]
            h += 1
            counters[t, C_EVICTED] += 1
        if e == L:
            _compact(ts2d, val2d, st2d, t, h, e)
            pos -= h
            e -= h
            h = 0
        if pos < e:  # late sample: shift the tail right by one
            for q in range(e, pos, -1):
                row[q] = row[q - 1]
                val2d[t, q] = val2d[t, q - 1]
                st2d[t, q] = st2d[t, q - 1]
            counters[t, C_LATE] += 1
        else:
            counters[t, C_APPENDED] += 1
        row[pos] = x
        val2d[t, pos] = v_in[i]
        st2d[t, pos] = s_in[i]
        e += 1
    head[t] = h
    tail[t] = e
