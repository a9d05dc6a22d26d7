"""Synthetic part-level history (feature vectors + labels) of the documented shape, for benchmarks and tests.

Owns :func:`synthetic_part_history`: a features frame indexed by (line_id, serial) with pq's naming
(``<signal>__mean``, ``__std``, ``__slope``, ``__dev_baseline``, ``n_good__<signal>``, ``ctx__*``)
and a parts frame (cycle_end, context columns, ``defect``, ``defect_code``). Conditions move the
signals (a hot hall reads hotter) without making bad parts; defects come from process deviation
*relative to conditions* — the same structure as the simulator, at a fraction of the cost. It is
not a stand-in for the simulator in the robustness experiment; it is what benchmarks can size freely.

:func:`synthetic_dataset` cuts it to a training :class:`models.dataset.Dataset` of an exact width
(``pq bench train`` and ``pq bench score``).

Example::

    features, parts = synthetic_part_history(n_parts=5000, n_signals=8, seed=1, scenario="heatwave")
    ds = synthetic_dataset(n_parts=2000, n_features=40)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["synthetic_part_history", "synthetic_dataset", "training_cycle_s", "SCENARIO_SHIFTS"]

# ambient offset °C, humidity offset %RH, supplier
SCENARIO_SHIFTS = {
    "normal": (0.0, 0.0, "Polymera"),
    "heatwave": (9.0, 0.0, "Polymera"),
    "humid": (0.0, 25.0, "Polymera"),
    "new-supplier": (0.0, 0.0, "NovaResin"),
}


def synthetic_part_history(n_parts: int = 5000, n_signals: int = 8, seed: int = 0, scenario: str = "normal",
                      lines: int = 1, cycle_s: float = 20.0, start: str = "2024-04-01",
                      defect_rate: float = 0.03, unlabelled_tail: int = 0,
                      stats: tuple[str, ...] = ("mean", "std", "slope", "dev_baseline")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, parts) for ``n_parts`` parts spread over ``lines`` lines.

    ``unlabelled_tail`` last parts per line have no inspection result yet (label delay).
    """
    rng = np.random.default_rng(seed)
    amb_off, hum_off, supplier = SCENARIO_SHIFTS[scenario]
    per_line = n_parts // lines
    feats, parts = [], []
    for li in range(lines):
        line = f"line-{li + 1}"
        n = per_line
        t = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * cycle_s, unit="s")
        hours = np.arange(n) * cycle_s / 3600
        weather = np.cumsum(rng.normal(0, 0.05, n))  # slow fronts
        ambient = 19 + amb_off + 4 * np.sin(2 * np.pi * (hours - 9) / 24) + np.clip(weather, -4, 4)
        humidity = np.clip(48 + hum_off + 10 * np.sin(2 * np.pi * hours / 24 / 5) + rng.normal(0, 3, n), 10, 98)
        lot = (hours // 30).astype(int)  # a new lot every 30 h
        lot_mfi = (22 + (-4 if supplier == "NovaResin" else 0) + rng.normal(0, 1.5, lot.max() + 1))[lot]
        shift = np.array(["C", "A", "B"])[((t.hour.to_numpy() + 2) // 8) % 3]
        # a latent process excursion (what really makes bad parts), independent of conditions
        latent = np.zeros((n, n_signals))
        for k in range(n_signals):
            e = rng.normal(0, 1, n)
            latent[:, k] = pd.Series(e).ewm(alpha=0.3).mean().to_numpy() * 2.2
        plant = np.random.default_rng(12345 + li)  # the line's physics do not change with the seed
        sens_amb = plant.uniform(0.3, 0.9, n_signals)
        sens_hum = plant.uniform(-0.15, 0.15, n_signals)
        sens_mfi = plant.uniform(-0.8, 0.8, n_signals)
        base = plant.uniform(50, 250, n_signals)
        scale = plant.uniform(1.0, 3.0, n_signals)
        expected = (base + np.outer(ambient - 19, sens_amb) + np.outer(humidity - 48, sens_hum)
                    + np.outer(lot_mfi - 22, sens_mfi))
        dev = latent * scale
        mean = expected + dev + rng.normal(0, 0.3, (n, n_signals)) * scale
        # defects: a few signals' true deviation beyond ~2 sigma raises the risk sharply
        drivers = min(3, n_signals)
        z = np.abs(latent[:, :drivers]).max(axis=1)
        logit = np.log(defect_rate / (1 - defect_rate)) - 2.0 + 3.0 * np.clip(z - 0.8, 0, None) ** 1.2
        p = 1 / (1 + np.exp(-logit))
        defect = rng.random(n) < p
        codes = np.where(defect, np.array(["SHORT_SHOT", "FLASH", "SINK_MARK"])[rng.integers(0, 3, n)], "")
        cols: dict[str, np.ndarray] = {}
        for k in range(n_signals):
            s = f"sig{k:03d}_x"
            for st in stats:
                if st == "mean":
                    cols[f"{s}__mean"] = mean[:, k]
                elif st == "std":
                    cols[f"{s}__std"] = np.abs(rng.normal(1, 0.2, n) * scale[k] * (1 + 0.2 * np.abs(latent[:, k])))
                elif st == "slope":
                    cols[f"{s}__slope"] = rng.normal(0, 0.1, n) + 0.02 * latent[:, k]
                elif st == "dev_baseline":
                    cols[f"{s}__dev_baseline"] = mean[:, k] - expected[:, k]
                else:
                    cols[f"{s}__{st}"] = mean[:, k] + rng.normal(0, scale[k], n)
            cols[f"n_good__{s}"] = np.full(n, 200.0)
        cols["ctx__ambient_temp_c"] = ambient
        cols["ctx__humidity_pct"] = humidity
        cols["ctx__lot_mfi_g10min"] = lot_mfi
        serial = [f"L{li + 1}-{i:07d}" for i in range(n)]
        f = pd.DataFrame(cols)
        f.index = pd.MultiIndex.from_arrays([[line] * n, serial], names=["line_id", "serial"])
        feats.append(f)
        label = defect.astype(float)
        if unlabelled_tail:
            label[-unlabelled_tail:] = np.nan
        parts.append(pd.DataFrame({
            "line_id": line, "serial": serial, "cycle_start": t - pd.Timedelta(seconds=cycle_s), "cycle_end": t,
            "product": "housing-a", "material_lot": [f"{supplier[:2].upper()}-{li}-{x:04d}" for x in lot],
            "supplier": supplier, "shift": shift, "ambient_temp_c": ambient, "humidity_pct": humidity,
            "lot_mfi_g10min": lot_mfi, "defect": label, "defect_code": np.where(np.isnan(label), None, codes),
        }))
    return pd.concat(feats), pd.concat(parts, ignore_index=True)


# Validation folds are whole production days with their lots purged from the training side, so a
# small number of parts still needs a few days of history: the cycle stretches (30 s at the
# benchmarks' default sizes).
_MIN_DAYS = 6


def training_cycle_s(training_parts: int) -> float:
    """Cycle seconds that spread ``training_parts`` over at least six days (never below 30 s)."""
    return max(30.0, _MIN_DAYS * 86400 / max(training_parts, 1))


def synthetic_dataset(n_parts: int, n_features: int, seed: int = 0, cycle_s: float | None = None):
    """A training Dataset of ``n_parts`` parts with exactly ``n_features`` columns (three of them context)."""
    from models.dataset import dataset_from_frames

    n_signals = max(1, -(-(n_features - 3) // 4))  # ceil: enough columns to cut exactly n_features
    f, p = synthetic_part_history(n_parts=n_parts, n_signals=n_signals, seed=seed,
                                  cycle_s=training_cycle_s(n_parts) if cycle_s is None else cycle_s)
    f = f[[c for c in f.columns if not c.startswith("n_good__")]]
    keep = list(f.columns[:n_features - 3]) + ["ctx__ambient_temp_c", "ctx__humidity_pct", "ctx__lot_mfi_g10min"]
    return dataset_from_frames(f[list(dict.fromkeys(keep))], p)
