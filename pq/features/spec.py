"""Feature sets declared as data: which signal, which window, which statistic.

This module owns the feature-set model (`FeatureSet`, `SignalGroup`, `WindowDef`, `ContextFeature`,
`DerivedFeature`), its TOML loader and the safe expression language for derived features. It is
pure Python (no numba, no pandas) so that `pq --help` and the UI can read a spec cheaply.
It must not import connectors/, models/, ui/ or simulators/.

Example::

    fs = load_feature_set()                     # the shipped default_spec.toml
    fs.version, len(fs.feature_names)
    fs = load_feature_set("my_spec.toml")

Spec format (TOML), see pq/features/README.md for the full reference::

    version = "default-1"
    min_good = 3
    stats = ["mean", "std", "slope"]          # default statistics for every signal entry
    [windows.last5s]
    last_s = 5.0
    [[signals]]
    tags = ["melt_temp_c", "mould_temp_c"]
    windows = ["cycle", "last5s"]
    [[context]]
    name = "shift"
    kind = "category"
    categories = ["A", "B", "C"]
    [[derived]]
    name = "melt_x_hold"
    expr = "melt_temp_c.mean * hold_pressure_bar.mean"

Why one file of ~600 lines: the feature-set model, its TOML loader and the expression language of
derived features validate each other (an expression names signals and windows of the same set);
the loader's messages name file, entry and key from one place.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "STATS",
    "StatDef",
    "WindowDef",
    "SignalGroup",
    "ContextFeature",
    "DerivedFeature",
    "FeatureSet",
    "FeatureSpecError",
    "UnknownTagError",
    "FeatureInputError",
    "load_feature_set",
    "parse_feature_set",
    "parse_derived",
    "DEFAULT_SPEC_PATH",
]

DEFAULT_SPEC_PATH = Path(__file__).with_name("default_spec.toml")

from pq.errors import FeatureInputError, FeatureSpecError, UnknownTagError  # noqa: F401 - part of this module's API


# --------------------------------------------------------------------------------------------------
# Statistics: a table, not branches. `col` is the column of the kernel's output row (see _kernels).
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatDef:
    name: str
    col: int  # column in the kernel output; -1 for statistics computed after the kernel
    min_n: int  # good samples this statistic needs on top of the group's min_good
    limit: str = ""  # "high" / "low" when the statistic needs a tag limit
    doc: str = ""


# Kernel output columns (kept in sync with pq/features/_kernels.py, asserted in tests).
K_N_GOOD, K_N_BAD, K_MEAN, K_STD, K_MIN, K_MAX, K_FIRST, K_LAST, K_RANGE, K_SLOPE = range(10)
K_T_ABOVE, K_T_BELOW, K_EWMA = 10, 11, 12
N_KERNEL_COLS = 13

STATS: dict[str, StatDef] = {
    s.name: s
    for s in (
        StatDef("mean", K_MEAN, 1, doc="arithmetic mean of good samples"),
        StatDef("std", K_STD, 2, doc="sample standard deviation (ddof=1)"),
        StatDef("min", K_MIN, 1, doc="minimum"),
        StatDef("max", K_MAX, 1, doc="maximum"),
        StatDef("first", K_FIRST, 1, doc="first good value in time order"),
        StatDef("last", K_LAST, 1, doc="last good value in time order"),
        StatDef("range", K_RANGE, 1, doc="max - min"),
        StatDef("slope", K_SLOPE, 2, doc="least-squares slope of value vs time, unit per second"),
        StatDef("time_above", K_T_ABOVE, 1, "high", "seconds the held value was > high limit"),
        StatDef("time_below", K_T_BELOW, 1, "low", "seconds the held value was < low limit"),
        StatDef("ewma", K_EWMA, 1, doc="EWMA (sample-based alpha) at the last good sample"),
        StatDef("dev_baseline", -1, 1, doc="mean - context baseline expectation"),
    )
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or "__" in name:
        raise FeatureSpecError(
            f"{kind} name must be snake_case ([a-z][a-z0-9_]*, no '__'), got {name!r}"
        )
    return name


@dataclass(frozen=True)
class WindowDef:
    """A window relative to the part's cycle: bound = cycle_start + frac * duration + offset_s.

    Both bounds are clipped to [cycle_start, cycle_end]; the window is (start, end]: a value stamped
    exactly at the cycle end (per-cycle actual values are written then) belongs to that cycle.
    `cycle` is (0, 0, 1, 0); `last_s = 5` is (1, -5, 1, 0); `first_s = 2` is (0, 0, 0, 2).
    """

    name: str
    start_frac: float = 0.0
    start_offset_s: float = 0.0
    end_frac: float = 1.0
    end_offset_s: float = 0.0

    @classmethod
    def from_toml(cls, name: str, d: Mapping[str, Any]) -> "WindowDef":
        _check_name("window", name)
        allowed = {"start_frac", "start_offset_s", "end_frac", "end_offset_s", "last_s", "first_s"}
        extra = set(d) - allowed
        if extra:
            raise FeatureSpecError(
                f"window {name!r}: unknown keys {sorted(extra)}, expected some of {sorted(allowed)}"
            )
        kw: dict[str, float] = {}
        for k in ("start_frac", "start_offset_s", "end_frac", "end_offset_s", "last_s", "first_s"):
            if k in d:
                v = d[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise FeatureSpecError(f"window {name!r}: {k} must be a finite number, got {v!r}")
                kw[k] = float(v)
        if "last_s" in kw:
            if kw["last_s"] <= 0:
                raise FeatureSpecError(f"window {name!r}: last_s must be > 0, got {kw['last_s']}")
            kw.setdefault("start_frac", 1.0)
            kw["start_offset_s"] = kw.get("start_offset_s", 0.0) - kw.pop("last_s")
        if "first_s" in kw:
            if kw["first_s"] <= 0:
                raise FeatureSpecError(f"window {name!r}: first_s must be > 0, got {kw['first_s']}")
            kw.setdefault("end_frac", 0.0)
            kw["end_offset_s"] = kw.get("end_offset_s", 0.0) + kw.pop("first_s")
        for k in ("start_frac", "end_frac"):
            if k in kw and not 0.0 <= kw[k] <= 1.0:
                raise FeatureSpecError(f"window {name!r}: {k} must be in [0, 1], got {kw[k]}")
        return cls(name=name, **kw)


CYCLE = WindowDef("cycle")


@dataclass(frozen=True)
class SignalGroup:
    """One (tag, window) pair and the statistics computed over it."""

    tag: str
    window: str
    stats: tuple[str, ...]
    min_good: int
    ewma_alpha: float

    @property
    def prefix(self) -> str:
        return self.tag if self.window == "cycle" else f"{self.tag}__{self.window}"

    @property
    def label(self) -> str:  # used in reasons
        return self.tag if self.window == "cycle" else f"{self.tag}@{self.window}"

    def feature_name(self, stat: str) -> str:
        return f"{self.prefix}__{stat}"

    @property
    def n_good_name(self) -> str:
        return f"n_good__{self.prefix}"

    @property
    def n_bad_name(self) -> str:
        return f"n_bad__{self.prefix}"


@dataclass(frozen=True)
class ContextFeature:
    """A context value joining the vector. numeric -> ctx__<name>; category -> codes or one-hot."""

    name: str
    kind: str = "numeric"  # "numeric" | "category"
    categories: tuple[str, ...] = ()
    encoding: str = "codes"  # "codes" -> ctx__<name> = index; "onehot" -> ctx__<name>__<cat> 0/1

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        if self.kind == "category" and self.encoding == "onehot":
            return tuple(f"ctx__{self.name}__{_slug(c)}" for c in self.categories)
        return (f"ctx__{self.name}",)


def _slug(s: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "_", str(s).lower()).strip("_")
    return out or "x"


# --------------------------------------------------------------------------------------------------
# Derived features: a whitelisted arithmetic language parsed with `ast`, never eval'd.
# --------------------------------------------------------------------------------------------------

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_UNARY = {ast.USub: "neg", ast.UAdd: "pos"}
_FUNCS = {"abs": 1, "sqrt": 1, "log": 1, "log1p": 1, "exp": 1, "min": 2, "max": 2}

Node = tuple  # ("num", v) | ("ref", feature_name) | ("bin", op, a, b) | ("un", op, a) | ("call", f, args)


def _attr_chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _compile_expr(name: str, expr: str) -> Node:
    if not isinstance(expr, str) or not expr.strip():
        raise FeatureSpecError(f"derived {name!r}: expr must be a non-empty string, got {expr!r}")
    if len(expr) > 2000:
        raise FeatureSpecError(f"derived {name!r}: expr longer than 2000 characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise FeatureSpecError(f"derived {name!r}: cannot parse {expr!r}: {e.msg}") from None

    def conv(n: ast.AST) -> Node:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(
            n.value, bool
        ):
            return ("num", float(n.value))
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return ("bin", _BINOPS[type(n.op)], conv(n.left), conv(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _UNARY:
            return ("un", _UNARY[type(n.op)], conv(n.operand))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and not n.keywords:
            f = n.func.id
            if f not in _FUNCS:
                raise FeatureSpecError(
                    f"derived {name!r}: function {f!r} not allowed, expected one of {sorted(_FUNCS)}"
                )
            if len(n.args) != _FUNCS[f]:
                raise FeatureSpecError(
                    f"derived {name!r}: {f}() takes {_FUNCS[f]} argument(s), got {len(n.args)}"
                )
            return ("call", f, tuple(conv(a) for a in n.args))
        chain = _attr_chain(n)
        if chain is not None:
            # melt_temp_c.mean | melt_temp_c.last5s.mean | ctx.ambient_temp_c | melt_temp_c__mean
            if chain[0] == "ctx":
                return ("ref", "ctx__" + "__".join(chain[1:]))
            return ("ref", "__".join(chain))
        raise FeatureSpecError(
            f"derived {name!r}: {ast.dump(n)[:60]} is not allowed; use numbers, feature references "
            f"(tag.stat, tag.window.stat, ctx.name), + - * / **, and {sorted(_FUNCS)}"
        )

    return conv(tree.body)


def _refs(node: Node) -> list[str]:
    kind = node[0]
    if kind == "ref":
        return [node[1]]
    if kind == "bin":
        return _refs(node[2]) + _refs(node[3])
    if kind == "un":
        return _refs(node[2])
    if kind == "call":
        return [r for a in node[2] for r in _refs(a)]
    return []


@dataclass(frozen=True)
class DerivedFeature:
    name: str
    expr: str
    tree: Node = field(compare=False, repr=False)

    @property
    def refs(self) -> list[str]:
        return _refs(self.tree)

    def evaluate(self, cols: Mapping[str, Any]) -> Any:
        """Evaluate on numpy arrays (or pandas Series) keyed by feature name. IEEE semantics."""
        import numpy as np

        with np.errstate(all="ignore"):
            return _eval_node(self.tree, cols)


_NP_FUNCS: dict[str, Any] = {}


def _eval_node(n: Node, cols: Mapping[str, Any]) -> Any:
    # a module function, not a closure: a recursive closure is a reference cycle, and one per
    # evaluation (every streaming vector) kept the garbage collector busy
    k = n[0]
    if k == "num":
        return n[1]
    if k == "ref":
        return cols[n[1]]
    if k == "un":
        v = _eval_node(n[2], cols)
        return -v if n[1] == "neg" else v
    if k == "bin":
        a, b = _eval_node(n[2], cols), _eval_node(n[3], cols)
        op = n[1]
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return a**b
    if not _NP_FUNCS:
        import numpy as np

        _NP_FUNCS.update({"abs": np.abs, "sqrt": np.sqrt, "log": np.log, "log1p": np.log1p,
                       "exp": np.exp, "min": np.fmin, "max": np.fmax})
    return _NP_FUNCS[n[1]](*[_eval_node(a, cols) for a in n[2]])


def parse_derived(items: Sequence[Any], known: Sequence[str], where: str = "derived") -> tuple[DerivedFeature, ...]:
    """Compile ``[[derived]]`` tables (``name``, ``expr``) against the features ``known`` before them.

    Shared by feature specs and import mappings, so a derived feature means the same everywhere. A
    derived feature may reference those declared before it.

    >>> [d.refs for d in parse_derived([{"name": "power_w", "expr": "torque_nm.value * speed_rad_s.value"}],
    ...                                ["torque_nm__value", "speed_rad_s__value"])]
    [['torque_nm__value', 'speed_rad_s__value']]
    """
    names = list(known)
    out: list[DerivedFeature] = []
    for i, dd in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(dd, Mapping) or set(dd) - {"name", "expr"}:
            raise FeatureSpecError(f"{at}: expected a table with name and expr, got {dd!r}")
        name = _check_name("derived", dd.get("name"))
        tree = _compile_expr(name, dd.get("expr"))
        df = DerivedFeature(name, dd["expr"], tree)
        missing = [r for r in df.refs if r not in names]
        if missing:
            raise FeatureSpecError(
                f"{at}: derived {name!r} references {missing} which are not features declared before it"
            )
        names.append(name)
        out.append(df)
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# The feature set
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """A versioned, immutable feature set. `feature_names` fixes the vector order everywhere."""

    version: str
    groups: tuple[SignalGroup, ...]
    windows: Mapping[str, WindowDef]
    context: tuple[ContextFeature, ...] = ()
    derived: tuple[DerivedFeature, ...] = ()
    accept_uncertain: bool = False
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    description: str = ""
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived views -------------------------------------------------------------------------
    @cached_property
    def tags(self) -> tuple[str, ...]:
        """Process tags the spec reads, in first-use order."""
        return tuple(dict.fromkeys(g.tag for g in self.groups))

    @cached_property
    def window_list(self) -> tuple[WindowDef, ...]:
        """Windows the groups use, in first-use order (index = window id for the kernels)."""
        names = dict.fromkeys(g.window for g in self.groups)
        return tuple(self.windows[n] for n in names)

    @property
    def bad_mask(self) -> int:
        """Status bits that make a sample unusable (OPC UA: Bad 0x80000000, Uncertain 0x40000000)."""
        return 0x80000000 if self.accept_uncertain else 0xC0000000

    @cached_property
    def group_feature_names(self) -> tuple[str, ...]:
        out: list[str] = []
        for g in self.groups:
            out.extend(g.feature_name(s) for s in g.stats)
            out.append(g.n_good_name)
            out.append(g.n_bad_name)
        return tuple(out)

    @cached_property
    def context_feature_names(self) -> tuple[str, ...]:
        return tuple(n for c in self.context for n in c.feature_names)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return (
            self.group_feature_names
            + self.context_feature_names
            + tuple(d.name for d in self.derived)
        )

    @cached_property
    def baseline_targets(self) -> tuple[str, ...]:
        """Mean features whose context baseline the spec asks for (dev_baseline), e.g. melt_temp_c."""
        return tuple(g.prefix for g in self.groups if "dev_baseline" in g.stats)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical spec content: two specs with one version must share it."""
        blob = json.dumps(self.source, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def check_tags(self, known: Sequence[str], *, where: str = "tag catalog") -> None:
        """Raise UnknownTagError if the spec reads tags that `known` does not list."""
        unknown = [t for t in self.tags if t not in set(known)]
        if unknown:
            raise UnknownTagError(
                f"feature set {self.version!r} references tags unknown to the {where}: "
                f"{', '.join(unknown)} (known: {', '.join(sorted(known)[:30])}"
                f"{', ...' if len(known) > 30 else ''})"
            )


def _as_list(v: Any, what: str) -> list[Any]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)):
        return list(v)
    raise FeatureSpecError(f"{what} must be a string or a list, got {v!r}")


def _min_good(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise FeatureSpecError(f"{where}: min_good must be an integer >= 1, got {v!r}")
    return v


def _alpha(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
        raise FeatureSpecError(f"{where}: ewma_alpha must be in (0, 1], got {v!r}")
    return float(v)


def _stats(v: Any, where: str) -> tuple[str, ...]:
    lst = _as_list(v, f"{where}: stats")
    bad = [s for s in lst if s not in STATS]
    if bad:
        raise FeatureSpecError(f"{where}: unknown statistics {bad}, expected some of {list(STATS)}")
    if len(set(lst)) != len(lst):
        raise FeatureSpecError(f"{where}: duplicated statistics in {lst}")
    return tuple(lst)


def _parse_windows(d: Mapping[str, Any]) -> dict[str, WindowDef]:
    windows: dict[str, WindowDef] = {"cycle": CYCLE}
    for wname, wd in (d.get("windows") or {}).items():
        if wname == "cycle":
            raise FeatureSpecError("window 'cycle' is built in and cannot be redefined")
        if not isinstance(wd, Mapping):
            raise FeatureSpecError(f"window {wname!r} must be a table, got {wd!r}")
        windows[wname] = WindowDef.from_toml(wname, wd)
    return windows


def _parse_signals(d: Mapping[str, Any], windows: Mapping[str, WindowDef], default_stats: tuple[str, ...],
                   min_good: int, alpha: float) -> list[SignalGroup]:
    """Every (tag, window) group of ``[[signals]]``, each declared once."""
    groups: list[SignalGroup] = []
    seen: set[tuple[str, str]] = set()
    allowed = {"tag", "tags", "window", "windows", "stats", "min_good", "ewma_alpha"}
    for i, sd in enumerate(d.get("signals") or []):
        where = f"signals[{i}]"
        if not isinstance(sd, Mapping):
            raise FeatureSpecError(f"{where} must be a table, got {sd!r}")
        extra = set(sd) - allowed
        if extra:
            raise FeatureSpecError(f"{where}: unknown keys {sorted(extra)}, expected some of {sorted(allowed)}")
        if ("tag" in sd) == ("tags" in sd):
            raise FeatureSpecError(f"{where}: give exactly one of 'tag' or 'tags'")
        tags = _as_list(sd.get("tag", sd.get("tags")), f"{where}: tags")
        wins = _as_list(sd.get("window", sd.get("windows", "cycle")), f"{where}: windows")
        stats = _stats(sd["stats"], where) if "stats" in sd else default_stats
        mg = _min_good(sd.get("min_good", min_good), where)
        al = _alpha(sd.get("ewma_alpha", alpha), where)
        for t in tags:
            _check_name("tag", t)
            for w in wins:
                if w not in windows:
                    raise FeatureSpecError(f"{where}: unknown window {w!r}, defined: {sorted(windows)}")
                if (t, w) in seen:
                    raise FeatureSpecError(f"{where}: ({t}, {w}) declared twice")
                seen.add((t, w))
                groups.append(SignalGroup(t, w, stats, mg, al))
    if not groups:
        raise FeatureSpecError("spec: no [[signals]] entries; a feature set needs at least one signal")
    return groups


def _parse_limits(d: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    limits: dict[str, tuple[float, float]] = {}
    for tag, lim in (d.get("limits") or {}).items():
        if not isinstance(lim, Mapping) or set(lim) - {"low", "high"}:
            raise FeatureSpecError(f"limits.{tag}: expected a table with low and/or high, got {lim!r}")
        limits[tag] = (float(lim.get("low", math.nan)), float(lim.get("high", math.nan)))
    return limits


def _parse_context(d: Mapping[str, Any]) -> list[ContextFeature]:
    context: list[ContextFeature] = []
    for i, cd in enumerate(d.get("context") or []):
        where = f"context[{i}]"
        if not isinstance(cd, Mapping):
            raise FeatureSpecError(f"{where} must be a table, got {cd!r}")
        extra = set(cd) - {"name", "kind", "categories", "encoding"}
        if extra:
            raise FeatureSpecError(f"{where}: unknown keys {sorted(extra)}")
        name = _check_name("context", cd.get("name"))
        kind = cd.get("kind", "numeric")
        if kind not in ("numeric", "category"):
            raise FeatureSpecError(f"{where} ({name}): kind must be numeric or category, got {kind!r}")
        cats = tuple(str(c) for c in cd.get("categories", ()))
        enc = cd.get("encoding", "codes")
        if kind == "category":
            if not cats or len(set(cats)) != len(cats):
                raise FeatureSpecError(f"{where} ({name}): category needs a list of distinct categories")
            if enc not in ("codes", "onehot"):
                raise FeatureSpecError(f"{where} ({name}): encoding must be codes or onehot, got {enc!r}")
            if enc == "onehot" and len({_slug(c) for c in cats}) != len(cats):
                raise FeatureSpecError(f"{where} ({name}): categories collide after slugging: {cats}")
        context.append(ContextFeature(name, kind, cats, enc))
    return context


_TOP_KEYS = {"version", "description", "min_good", "ewma_alpha", "stats", "accept_uncertain",
             "windows", "signals", "context", "derived", "limits"}


def parse_feature_set(d: Mapping[str, Any]) -> FeatureSet:
    """Build a FeatureSet from a parsed TOML mapping, validating every entry."""
    extra = set(d) - _TOP_KEYS
    if extra:
        raise FeatureSpecError(f"spec: unknown top-level keys {sorted(extra)}")
    version = d.get("version")
    if not isinstance(version, str) or not version.strip():
        raise FeatureSpecError(f"spec: version must be a non-empty string, got {version!r}")
    min_good = _min_good(d.get("min_good", 3), "spec")
    alpha = _alpha(d.get("ewma_alpha", 0.2), "spec")
    default_stats = _stats(d.get("stats", [s for s in STATS]), "spec")
    accept_uncertain = d.get("accept_uncertain", False)
    if not isinstance(accept_uncertain, bool):
        raise FeatureSpecError(f"spec: accept_uncertain must be true/false, got {accept_uncertain!r}")
    windows = _parse_windows(d)
    groups = _parse_signals(d, windows, default_stats, min_good, alpha)
    limits = _parse_limits(d)
    context = _parse_context(d)

    names: list[str] = []
    for g in groups:
        names.extend(g.feature_name(s) for s in g.stats)
        names += [g.n_good_name, g.n_bad_name]
    names += [n for c in context for n in c.feature_names]
    derived = parse_derived(d.get("derived") or [], names)
    names += [df.name for df in derived]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise FeatureSpecError(f"spec: duplicated feature names {sorted(dup)}")

    return FeatureSet(
        version=version.strip(),
        groups=tuple(groups),
        windows=windows,
        context=tuple(context),
        derived=tuple(derived),
        accept_uncertain=accept_uncertain,
        limits=limits,
        description=str(d.get("description", "")),
        source=dict(d),
    )


def load_feature_set(path: str | Path | None = None) -> FeatureSet:
    """Load a feature set from TOML; `None` loads the shipped default_spec.toml."""
    p = Path(path) if path is not None else DEFAULT_SPEC_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FeatureSpecError(f"cannot read feature spec {p}: {e.strerror}") from None
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FeatureSpecError(f"feature spec {p} is not valid TOML: {e}") from None
    fs = parse_feature_set(d)
    logger.debug("loaded feature set %s from %s (%d features)", fs.version, p, len(fs.feature_names))
    return fs
