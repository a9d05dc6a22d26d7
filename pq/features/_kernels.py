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

Why one file of ~600 lines: Numba caches and compiles per module; the kernels call each other and
must be compiled together, so they stay in one compilation unit.
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


# ---- one window's statistics as a resumable accumulator ------------------------------------------
# The state of a window is a tuple (n, nbad, k, t0, sx, sxx, st, stt, stx, mn, mx, first, last, ew,
# t_above, t_below, prev_ts, prev_v, prev_ok). `_acc_step` adds one (non-duplicated) sample and
# `_acc_finish` writes the 13 output columns. `window_stats` (grouped samples, the streaming path
# and the regrouping batch path) and `fused_stats` (time-interleaved rows, state kept per slot in
# memory) run these very same two functions, so both give bit-identical numbers.


@njit(cache=True, nogil=True)
def _acc_init():
    return (0, 0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf, _NAN, _NAN, _NAN, 0.0, 0.0,
            0, 0.0, False)


@njit(cache=True, nogil=True)
def _acc_step(a, tsi, v, s, lim_lo, lim_hi, alpha, bad_mask):
    """State `a` plus one sample (ts ns, value, status). k/t0 shift values and times by the first
    good sample so sums stay precise; time above/below: the previous sample's value (if usable)
    holds until this sample's ts."""
    (n, nbad, k, t0, sx, sxx, st, stt, stx, mn, mx, first, last, ew, t_above, t_below,
     prev_ts, prev_v, prev_ok) = a
    if prev_ok:
        # selects, not branches: whether a noisy value is above a limit is unpredictable
        d = (tsi - prev_ts) * 1e-9
        t_above = t_above + d if prev_v > lim_hi else t_above
        t_below = t_below + d if prev_v < lim_lo else t_below
    ok = (s & bad_mask) == 0 and np.isfinite(v)
    if not ok:
        return (n, nbad + 1, k, t0, sx, sxx, st, stt, stx, mn, mx, first, last, ew, t_above,
                t_below, tsi, v, False)
    if n == 0:
        k = v
        t0 = tsi
        first = v
        ew = v
    else:
        ew = (1.0 - alpha) * ew + alpha * v
    x = v - k
    t = (tsi - t0) * 1e-9
    mn = v if v < mn else mn
    mx = v if v > mx else mx
    return (n + 1, nbad, k, t0, sx + x, sxx + x * x, st + t, stt + t * t, stx + t * x, mn, mx,
            first, v, ew, t_above, t_below, tsi, v, True)


@njit(cache=True, nogil=True)
def _acc_finish(a, we, lim_lo, lim_hi, min_good, out):
    """Write out[0:13] from state `a` of a window ending at `we` (ns)."""
    (n, nbad, k, t0, sx, sxx, st, stt, stx, mn, mx, first, last, ew, t_above, t_below,
     prev_ts, prev_v, prev_ok) = a
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
def window_stats(ts, val, status, lo, hi, we, lim_lo, lim_hi, alpha, min_good, bad_mask, out):
    """All statistics of samples [lo, hi) in one pass; writes `out[0:13]`.

    - duplicated timestamps: only the first sample of a run of equal ts counts (first wins);
    - unusable samples (bad status bits or non-finite value) are counted in n_bad, excluded;
    - time above/below: each usable sample's value holds until the next sample of any status
      (or the window end `we`), so time under bad quality counts as neither;
    - fewer than `min_good` usable samples -> every statistic NaN (counts still written);
      std and slope need 2; time_above/below are NaN when their limit is NaN.
    """
    a = _acc_init()
    for i in range(lo, hi):
        tsi = ts[i]
        if i > lo and tsi == ts[i - 1]:
            continue
        a = _acc_step(a, tsi, val[i], status[i], lim_lo, lim_hi, alpha, bad_mask)
    _acc_finish(a, we, lim_lo, lim_hi, min_good, out)


@njit(cache=True, nogil=True)
def window_bounds(cs, ce, start_frac, start_off, end_frac, end_off, lo, hi):
    """lo/hi[p, w] (ns) = cycle_start + frac * duration + offset (offsets in ns, float), clipped
    to the cycle; a part whose cycle is empty or unknown (ce <= cs) gets empty windows (0, 0)."""
    for p in range(cs.shape[0]):
        c0 = cs[p]
        c1 = ce[p]
        if not c1 > c0:
            for w in range(lo.shape[1]):
                lo[p, w] = 0
                hi[p, w] = 0
            continue
        dur = float(c1 - c0)
        for w in range(lo.shape[1]):
            a = c0 + np.int64(np.rint(start_frac[w] * dur + start_off[w]))
            b = c0 + np.int64(np.rint(end_frac[w] * dur + end_off[w]))
            lo[p, w] = min(max(a, c0), c1)
            hi[p, w] = min(max(b, c0), c1)


@njit(cache=True, nogil=True)
def stream_stats(ts, val, status, grp_start, grp_end, cs, ce, start_frac, start_off, end_frac,
                 end_off, g_tag, g_win, g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out,
                 wlo, whi):
    """One part (streaming, cycle end): its window bounds into wlo/whi[0, :] and every group's
    statistics into out[0], in one call (each Python-to-Numba call costs microseconds)."""
    cs_a = np.empty(1, np.int64)
    ce_a = np.empty(1, np.int64)
    cs_a[0] = cs
    ce_a[0] = ce
    window_bounds(cs_a, ce_a, start_frac, start_off, end_frac, end_off, wlo, whi)
    part_key = np.zeros(1, np.int64)
    for j in range(out.shape[1]):
        _part_group(j, ts, val, status, grp_start, grp_end, part_key, wlo, whi, g_tag, g_win,
                    g_alpha, g_min, key_lim_lo, key_lim_hi, bad_mask, out)


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


# ---- fused batch path: time-interleaved rows, no regrouping of the whole frame --------------------
# Rows arrive interleaved in time (as a subscription or a time-ordered export delivers them). As long
# as every (line, tag) sees its samples in non-decreasing ts and the windows of one (line, window)
# do not overlap, each window's samples are met in time order in one pass over the rows. The pass
# goes block by block: a block's rows are bucketed by key into small cache-resident buffers, then
# each key's run goes through `_acc_step` with the window state in registers, resumed from and saved
# to a per-slot (line, group) state table between blocks. The 12 M-row frame is read once and never
# copied, and the numbers are bit-identical to `window_stats` on regrouped rows.
_NAT_I64 = np.iinfo(np.int64).min
_MAX_I64 = np.iinfo(np.int64).max
_F_FIELDS = 16  # k, sx, sxx, st, stt, stx, mn, mx, first, last, ew, t_above, t_below, prev_v
_I_FIELDS = 8  # n, nbad, t0, prev_ts, prev_ok


@njit(cache=True, nogil=True)
def _acc_load(fst, ist, s):
    return (ist[s, 0], ist[s, 1], fst[s, 0], ist[s, 2], fst[s, 1], fst[s, 2], fst[s, 3],
            fst[s, 4], fst[s, 5], fst[s, 6], fst[s, 7], fst[s, 8], fst[s, 9], fst[s, 10],
            fst[s, 11], fst[s, 12], ist[s, 3], fst[s, 13], ist[s, 4] != 0)


@njit(cache=True, nogil=True)
def _acc_store(fst, ist, s, a):
    (n, nbad, k, t0, sx, sxx, st, stt, stx, mn, mx, first, last, ew, t_above, t_below,
     prev_ts, prev_v, prev_ok) = a
    ist[s, 0] = n
    ist[s, 1] = nbad
    ist[s, 2] = t0
    ist[s, 3] = prev_ts
    ist[s, 4] = 1 if prev_ok else 0
    fst[s, 0] = k
    fst[s, 1] = sx
    fst[s, 2] = sxx
    fst[s, 3] = st
    fst[s, 4] = stt
    fst[s, 5] = stx
    fst[s, 6] = mn
    fst[s, 7] = mx
    fst[s, 8] = first
    fst[s, 9] = last
    fst[s, 10] = ew
    fst[s, 11] = t_above
    fst[s, 12] = t_below
    fst[s, 13] = prev_v


@njit(cache=True, nogil=True)
def _run_slot(bts, bval, bst, k, r1, prev, fst, ist, ptr, slot, seq_part, pe, w, wlo, whi,
              lim_lo, lim_hi, alpha, min_good, bad_mask, out, j):
    """Feed bucket k's samples [0, r1) (ts ascending, except duplicates and missing ts: skipped
    as ts <= prev) to the window state of `slot` (one group j of that key)."""
    a = _acc_load(fst, ist, slot)
    pp = ptr[slot]
    p = -1
    clo = _MAX_I64
    chi = _MAX_I64
    if pp < pe:
        p = seq_part[pp]
        clo = wlo[p, w]
        chi = whi[p, w]
    for r in range(r1):
        x = bts[k, r]
        if x <= prev:
            continue
        prev = x
        while x > chi:  # the part's window is over: write it, move to the next part's
            if a[0] + a[1] > 0:
                _acc_finish(a, chi, lim_lo, lim_hi, min_good, out[p, j])
                a = _acc_init()
            pp += 1
            if pp < pe:
                p = seq_part[pp]
                clo = wlo[p, w]
                chi = whi[p, w]
            else:
                clo = _MAX_I64
                chi = _MAX_I64
        if x > clo:
            a = _acc_step(a, x, bval[k, r], bst[k, r], lim_lo, lim_hi, alpha, bad_mask)
    ptr[slot] = pp
    _acc_store(fst, ist, slot, a)


@njit(cache=True, nogil=True)
def _flush(bts, bval, bst, k, r1, last, first, n_tags, fst, ist, ptr, tg_ptr, tg_idx, g_win,
           g_alpha, g_min, seq_ptr, seq_part, wlo, whi, key_lim_lo, key_lim_hi, bad_mask, out,
           tally):
    """Run bucket k (r1 samples of one key, in arrival order) through every group of its tag.
    tally: [rows without ts, duplicates, went backwards]; returns False when the key's ts went
    backwards (then the one-pass order does not hold and nothing more is done)."""
    prev0 = last[k]
    prev = prev0
    for r in range(r1):
        x = bts[k, r]
        if x == _NAT_I64:
            tally[0] += 1
        elif x == prev:  # first wins, like the store's ON CONFLICT DO NOTHING
            tally[1] += 1
        elif x < prev:
            tally[2] = 1
            return False
        else:
            if prev == _NAT_I64:
                first[k] = x
            prev = x
    last[k] = prev
    G = out.shape[1]
    W = wlo.shape[1]
    ln = k // n_tags
    t = k - ln * n_tags
    for q in range(tg_ptr[t], tg_ptr[t + 1]):
        j = tg_idx[q]
        w = g_win[j]
        _run_slot(bts, bval, bst, k, r1, prev0, fst, ist, ptr, ln * G + j, seq_part,
                  seq_ptr[ln * W + w + 1], w, wlo, whi, key_lim_lo[k], key_lim_hi[k], g_alpha[j],
                  g_min[j], bad_mask, out, j)
    return True


@njit(cache=True, parallel=True, nogil=True)
def fused_stats(tcodes, lcodes, n_tc1, klut, n_tags, cap, ts, val, status, row_lo, row_hi,
                tg_ptr, tg_idx, g_tag, g_win, g_alpha, g_min, seq_ptr, seq_part, wlo, whi,
                key_lim_lo, key_lim_hi, bad_mask, out, counts, first_ts, last_ts):
    """out[p, j, :] for every part p and group j straight from rows in time order per key.

    Row i's key (line index * n_tags + tag index) is klut[(lcodes[i] + 1) * n_tc1 + tcodes[i] + 1]
    (n_tc1 = tag codes + 1), or n_keys for rows of tags/lines not computed or a missing code.
    Worker wk takes rows [row_lo[wk], row_hi[wk]); its rows go to per-key buckets of `cap`
    samples, each run through that key's windows when full (so the frame is read once and never
    copied). Groups of tag t: tg_idx[tg_ptr[t]:tg_ptr[t + 1]]. Parts whose window w is not
    empty, on line ln, sorted by window start and not overlapping:
    seq_part[seq_ptr[ln * W + w]:seq_ptr[ln * W + w + 1]].
    `out` must be pre-filled with the empty-window result (0, 0, NaN...): windows without samples
    are not written. counts[wk] = (rows of other tags/lines, rows without ts, duplicates, 1 if a
    key's ts went backwards: the worker stopped, the caller must regroup and sort).
    first_ts/last_ts[wk, key]: the worker's first and last ts of each key (NaT: none). With
    several workers, a window that got samples from two of them was written twice: the caller
    checks that none did (`_split_ok` in batch.py) and otherwise runs one worker.
    """
    G = out.shape[1]
    n_keys = key_lim_lo.shape[0]
    n_lines = n_keys // n_tags
    S = n_lines * G
    W = wlo.shape[1]
    for wk in prange(row_lo.shape[0]):
        fst = np.empty((S, _F_FIELDS))
        ist = np.zeros((S, _I_FIELDS), np.int64)
        ptr = np.empty(S, np.int64)
        init = _acc_init()
        for ln in range(n_lines):
            for j in range(G):
                s = ln * G + j
                ptr[s] = seq_ptr[ln * W + g_win[j]]
                _acc_store(fst, ist, s, init)
        last = last_ts[wk]
        first = first_ts[wk]
        # row stride cap + 8: with a power-of-two stride every bucket's next slot maps to the
        # same L1 cache sets, which made the bucketing pass 2.3x slower
        bts = np.empty((n_keys + 1, cap + 8), np.int64)
        bval = np.empty((n_keys + 1, cap + 8), np.float64)
        bst = np.empty((n_keys + 1, cap + 8), status.dtype)
        fill = np.zeros(n_keys + 1, np.int64)
        other = 0
        tally = np.zeros(3, np.int64)
        ok = True
        for i in range(row_lo[wk], row_hi[wk]):
            # rows of other tags go to a dummy bucket: no branch per row (tags are interleaved)
            k = klut[(lcodes[i] + 1) * n_tc1 + tcodes[i] + 1]
            r = fill[k]
            bts[k, r] = ts[i]
            bval[k, r] = val[i]
            bst[k, r] = status[i]
            r += 1
            if r == cap:
                if k < n_keys:
                    ok = _flush(bts, bval, bst, k, r, last, first, n_tags, fst, ist, ptr, tg_ptr,
                                tg_idx, g_win, g_alpha, g_min, seq_ptr, seq_part, wlo, whi,
                                key_lim_lo, key_lim_hi, bad_mask, out, tally)
                    if not ok:
                        break
                else:
                    other += cap
                r = 0
            fill[k] = r
        other += fill[n_keys]
        for k in range(n_keys):
            if not ok:
                break
            if fill[k] > 0:
                ok = _flush(bts, bval, bst, k, fill[k], last, first, n_tags, fst, ist, ptr,
                            tg_ptr, tg_idx, g_win, g_alpha, g_min, seq_ptr, seq_part, wlo, whi,
                            key_lim_lo, key_lim_hi, bad_mask, out, tally)
        if ok:  # close the windows still open
            for s in range(S):
                if ist[s, 0] + ist[s, 1] > 0:
                    ln = s // G
                    j = s - ln * G
                    k = ln * n_tags + g_tag[j]
                    p = seq_part[ptr[s]]
                    _acc_finish(_acc_load(fst, ist, s), whi[p, g_win[j]], key_lim_lo[k],
                                key_lim_hi[k], g_min[j], out[p, j])
        counts[wk, 0] = other
        counts[wk, 1] = tally[0]
        counts[wk, 2] = tally[1]
        counts[wk, 3] = tally[2]


# ---- regrouping batch path (fallback): rows out of time order per key, or overlapping windows ----


@njit(cache=True, parallel=True, nogil=True)
def group_scatter(tcodes, lcodes, n_tc1, klut, n_keys, n_chunks, ts, val, status):
    """Stable parallel counting sort of the sample arrays by key = klut[(lcode + 1) * n_tc1 +
    tcode + 1] (-1: not ours, dropped; rows without ts dropped too). Returns (ts, val, status,
    start, end, rows_other, rows_nat) with the samples of key k in [start[k], end[k])."""
    n = ts.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    counts = np.zeros((n_chunks, n_keys + 1), np.int64)
    other = np.zeros(n_chunks, np.int64)
    nat = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            k = klut[(lcodes[i] + 1) * n_tc1 + tcodes[i] + 1]
            if k < 0:
                other[c] += 1
            elif ts[i] == _NAT_I64:
                nat[c] += 1
            else:
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
            k = klut[(lcodes[i] + 1) * n_tc1 + tcodes[i] + 1]
            if k >= 0 and ts[i] != _NAT_I64:
                j = o[k]
                ts2[j] = ts[i]
                v2[j] = val[i]
                s2[j] = status[i]
                o[k] = j + 1
    return ts2, v2, s2, start, end, other.sum(), nat.sum()


@njit(cache=True, parallel=True, nogil=True)
def sort_groups(ts, val, status, start, end):
    """Sort each group [start[g], end[g]) by ts in place, stably (of duplicated ts the first in
    input order stays first). Returns the number of groups that needed it."""
    G = start.shape[0]
    resorted = np.zeros(G, np.int64)
    for g in prange(G):
        a = start[g]
        b = end[g]
        ok = True
        for i in range(a + 1, b):
            if ts[i] < ts[i - 1]:
                ok = False
                break
        if ok:
            continue
        resorted[g] = 1
        o = np.argsort(ts[a:b], kind="mergesort") + a
        t2 = ts[o]
        v2 = val[o]
        s2 = status[o]
        ts[a:b] = t2
        val[a:b] = v2
        status[a:b] = s2
    return resorted.sum()


@njit(cache=True, nogil=True)
def count_duplicates(ts, start, end):
    """Samples whose ts equals the previous one in the same group (skipped by window_stats)."""
    d = 0
    for g in range(start.shape[0]):
        for i in range(start[g] + 1, end[g]):
            if ts[i] == ts[i - 1]:
                d += 1
    return d


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
