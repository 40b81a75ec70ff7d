"""The counter screen against a plain sequential reference, over generated series."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.screen import DROP, KEEP, TOO_FAST, counters_of, screen
from pipeline.state import SeriesState

RATE = 10.0  # units per ms


def reference(samples: list[tuple[int, float]], state: tuple[int, float] | None, start: int, slack: int) -> list[int]:
    """One series, in time order: each sample against the last accepted one."""
    first = samples[0][0] if samples else 0
    prev = state if state is not None else ((start, 0.0) if 0 <= start < first else None)
    out = []
    for t, v in samples:
        if prev is None:
            out.append(KEEP)
            prev = (t, v)
            continue
        pt, pv = prev
        if t <= pt:
            out.append(KEEP)  # late or duplicate: not the screen's to judge
            continue
        room = RATE * (t - pt + slack)
        why = TOO_FAST if v >= pv and v - pv > room else DROP if v < pv and v > room else KEEP
        out.append(why)
        if why == KEEP:
            prev = (t, v)
    return out


series_samples = st.lists(
    st.tuples(st.integers(1, 400), st.one_of(st.integers(0, 20_000), st.integers(10**6, 10**9))), max_size=12
)


@settings(max_examples=300)
@given(
    st.lists(series_samples, min_size=1, max_size=4),
    st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 3000), st.integers(0, 50_000))), min_size=4, max_size=4),
    st.lists(st.integers(-1, 2000), min_size=4, max_size=4),
    st.integers(0, 300),
)
def test_screen_rejects_exactly_what_a_sequential_check_rejects(
    all_series: list[list[tuple[int, int]]], states: list[tuple[int, int] | None], starts: list[int], slack: int
) -> None:
    keys, ts, val, gid = [], [], [], []
    for s, samples in enumerate(all_series):
        t = 1000
        for dt, v in samples:
            t += dt
            keys.append(s)
            ts.append(t)
            val.append(float(v))
            gid.append(s)
    if not keys:
        return
    state = SeriesState()
    known = [s for s in range(len(all_series)) if states[s] is not None]
    if known:
        state.update(
            np.array(known, np.uint64),
            np.array([states[s][0] for s in known], np.int64),  # type: ignore[index]
            np.array([float(states[s][1]) for s in known]),  # type: ignore[index]
        )
    # shuffled, as a flush holds several batches; the screen sorts by series and time
    order = np.random.default_rng(len(keys)).permutation(len(keys))
    k, t, v, g = (np.array(a)[order] for a in (keys, ts, val, gid))
    c = counters_of(
        k.astype(np.uint64), t.astype(np.int64), v.astype(np.float64), np.ones(len(k), bool),
        np.full(len(k), RATE), state, np.array(starts, np.int64)[g],
    )  # fmt: skip
    got = screen(c, slack)
    want: dict[int, list[int]] = {}
    for s, samples in enumerate(all_series):
        st_ = states[s]
        ref_state = None if st_ is None else (st_[0], float(st_[1]))
        acc, t_ = [], 1000
        for dt, x in samples:
            t_ += dt
            acc.append((t_, float(x)))
        want[s] = reference(acc, ref_state, starts[s] if ref_state is None else -1, slack)
    for s in range(len(all_series)):
        mine = got[c.key == np.uint64(s)].tolist()
        assert mine == want[s], (s, all_series[s], states[s], starts[s])
