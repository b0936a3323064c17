"""What ``fastcnn bench`` prints and writes: the environment, the table, the JSON."""

from __future__ import annotations

import io
import json
import math
import os
import platform

from .cases import IMPLEMENTATIONS

__all__ = ["environment", "format_header", "format_table", "format_summary", "format_ratio"]


_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_NUM_THREADS",
    "FASTCNN_BACKEND",
)


def environment(torch=None) -> dict:
    """Versions, build, CPU, thread pools and environment of this process."""
    from .._info import config

    cfg = config()
    # This file is fastcnn/bench/report.py.
    cfg["fastcnn_path"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg["git"] = _git_revision(os.path.dirname(cfg["fastcnn_path"]))
    cfg["torch"] = torch.__version__ if torch is not None else None
    cfg["torch_threads"] = torch.get_num_threads() if torch is not None else None
    cfg["cpu"] = _cpu_model()
    cfg["cpu_count"] = os.cpu_count()
    cfg["env"] = {k: os.environ[k] for k in _ENV_VARS if k in os.environ}
    cfg["loadavg"] = _loadavg()
    return cfg


def _git_revision(path: str) -> str | None:
    """``commit[+dirty]`` of the checkout fastcnn runs from, if it is one."""
    import subprocess

    if not os.path.isdir(os.path.join(path, ".git")):
        return None
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", path, *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "--short=12", "HEAD")
        dirty = run("status", "--porcelain", "--", "fastcnn", "csrc")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def format_header(env: dict, options: dict) -> str:
    """The versions and settings block printed before the table."""
    from .._info import show_config

    buf = io.StringIO()
    show_config(file=buf)
    lines = ["fastcnn bench", "", *buf.getvalue().rstrip().splitlines()]
    git = f" (git {env['git']})" if env.get("git") else ""
    lines.append(f"location     {env['fastcnn_path']}{git}")
    lines.append(f"torch        {env['torch'] or 'not used (not requested or not installed)'}")
    lines.append(f"cpu          {env['cpu']} ({env['cpu_count']} logical cores)")
    env_vars = " ".join(f"{k}={v}" for k, v in env["env"].items()) or "(none of the thread/BLAS variables set)"
    lines.append(f"environment  {env_vars}")
    if "OPENBLAS_CORETYPE" in env["env"] or "OPENBLAS_L2_SIZE" in env["env"]:
        lines.append(
            "WARNING      OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and may slow NumPy's GEMMs; "
            "compare with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...`"
        )
    lines.append(f"load average {env['loadavg']} (before the run)")
    lines.append(
        f"method       one process, implementations interleaved round-robin; median of up to "
        f"{options['repeats']} repeats (>= {options['min_repeats']}, ~{options['budget']} s per "
        f"implementation) after a warm-up; a sample lasts >= {options['min_sample'] * 1e3:g} ms"
    )
    if options.get("verbose", True):
        lines.append(
            "columns      ms: median per call +- IQR/2 in % of it; rate: GB/s (bytes read + written, "
            f"each array once) or GFLOP/s (conv, fwd+bwd = 3x fwd); {_RATIOS}; {_MARKS}"
        )
    return "\n".join(lines)


def _rate(rec) -> str:
    if rec is None:
        return "-"
    if rec.get("gflops") is not None:
        return f"{rec['gflops']:.1f} GF/s"
    if rec.get("gbps") is not None:
        return f"{rec['gbps']:.1f} GB/s"
    return ""


def _ms(rec) -> str:
    if rec is None:
        return "-"
    spread = (rec["q3_s"] - rec["q1_s"]) / 2 / rec["median_s"] * 100 if rec["median_s"] else 0
    return f"{rec['median_s'] * 1e3:.3f}\u00b1{spread:.0f}%"


_RATIOS = "np/cy and torch/cy: time ratios (> 1: fastcnn's compiled kernels are faster)"
_MARKS = (
    "'~' after the op: the process was preempted about once per sample or more (other load), "
    "'!': results disagree"
)


def format_ratio(num, den) -> str:
    if num is None or den is None:
        return "-"
    return f"{num['median_s'] / den['median_s']:.2f}"


_COLUMNS = (
    ("op", 23, "<"), ("level", 8, "<"),
    ("cython ms", 14, ">"), ("numpy ms", 14, ">"), ("torch ms", 14, ">"),
    ("cython", 12, ">"), ("numpy", 12, ">"), ("torch", 12, ">"),
    ("np/cy", 7, ">"), ("torch/cy", 9, ">"),
)  # fmt: skip


def _line(cells) -> str:
    return " ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, _COLUMNS)).rstrip()


def _group_title(threads, dtype, geometry: str) -> str:
    return f"-- {threads} thread{'s' if threads != 1 else ''}, {dtype}, {geometry}"


def _rows(records):
    """Group records by (threads, dtype, shape) and then (op, level), in run order."""
    groups: dict = {}
    for rec in records:
        key = (rec["threads"], rec["dtype"], rec["shape"])
        groups.setdefault(key, {}).setdefault((rec["op"], rec["level"]), {})[rec["impl"]] = rec
    return groups


def _marked(op: str, records) -> str:
    """`op` with the table's marks: '!' if a result disagrees, '~' if a timing was noisy."""
    bad = any(r.get("agrees") is False for r in records)
    noisy = any(r["preempted"] >= r["repeats"] for r in records)
    return op + (" !" if bad else "") + (" ~" if noisy else "")


def _table_row(op, level, by_impl) -> str:
    cy, np_, th = (by_impl.get(k) for k in IMPLEMENTATIONS)
    return _line(
        (_marked(op, by_impl.values()), level, _ms(cy), _ms(np_), _ms(th), _rate(cy), _rate(np_),
         _rate(th), format_ratio(np_, cy), format_ratio(th, cy))
    )  # fmt: skip


def format_table(records) -> str:
    """The table of `records` (from :func:`bench`), one block per threads/dtype/shape."""
    lines = [_line([c[0] for c in _COLUMNS])]
    for (threads, dtype, _), rows in _rows(records).items():
        first = next(iter(next(iter(rows.values())).values()))
        lines.append(_group_title(threads, dtype, first["geometry"]))
        lines.extend(_table_row(op, level, by_impl) for (op, level), by_impl in rows.items())
    disagreements = _format_disagreements(records)
    if disagreements:
        lines.append(disagreements)
    return "\n".join(lines)


_SHORT = {"numpy": "np", "torch": "torch"}


def format_summary(records) -> str:
    """The compact table of `records` (from :func:`bench`): one row per benchmark.

    Each column is a time ratio at one thread count, the geometric mean over
    the shapes and dtypes measured: NumPy's and PyTorch's time over the
    compiled kernels' time, and the compiled kernels' time on one thread
    over their time on more. :func:`format_table` lists every case.
    """
    threads = sorted({r["threads"] for r in records})
    others = [i for i in IMPLEMENTATIONS[1:] if any(r["impl"] == i for r in records)]
    # Each column: title, (threads, impl) of the numerator, of the denominator.
    columns = [(f"{_SHORT[i]}/cy {t}t", (t, i), (t, "cython")) for t in threads for i in others]
    if 1 in threads:
        columns += [(f"cy 1t/{t}t", (1, "cython"), (t, "cython")) for t in threads if t != 1]
    if not columns:
        return "summary      nothing to compare (one implementation and thread count): see --verbose"
    # (op, level) -> (dtype, shape) -> (threads, impl) -> median seconds
    times: dict = {}
    for r in records:
        by_case = times.setdefault((r["op"], r["level"]), {}).setdefault((r["dtype"], r["shape"]), {})
        by_case[r["threads"], r["impl"]] = r["median_s"]
    lines = [
        f"summary      time ratios, each the geometric mean over the shapes "
        f"({', '.join(dict.fromkeys(r['shape'] for r in records))}) and dtypes "
        f"({', '.join(dict.fromkeys(r['dtype'] for r in records))}) measured; "
        "--verbose lists every case",
        f"columns      {_RATIOS}; cy 1t/Nt: compiled time on 1 thread over N threads (> 1: the threads "
        f"help); {_MARKS}",
        "",
        f"{'op':<23} {'level':<8}" + "".join(f"{title:>12}" for title, _, _ in columns),
    ]
    for (op, level), by_case in times.items():
        cells = []
        for _, num, den in columns:
            logs = [math.log(t[num] / t[den]) for t in by_case.values() if num in t and den in t]
            cells.append(f"{math.exp(sum(logs) / len(logs)):.2f}" if logs else "-")
        if set(cells) == {"-"}:  # the copy baseline: no compiled implementation to compare with
            continue
        rows = [r for r in records if (r["op"], r["level"]) == (op, level)]
        lines.append(f"{_marked(op, rows):<23} {level:<8}" + "".join(f"{c:>12}" for c in cells))
    n_bad = sum(r.get("agrees") is False for r in records)
    if n_bad:
        lines.append(f"! {n_bad} results disagree with the compiled kernels: --verbose or --json lists them")
    return "\n".join(lines)


def _format_disagreements(records) -> str:
    bad = [r for r in records if r.get("agrees") is False]
    if not bad:
        return ""
    lines = ["", "! results that disagree with the compiled kernels (the timing compares different work):"]
    lines.extend(
        f"  {r['op']} [{r['level']}] {r['impl']} {r['dtype']} {r['shape']} {r['threads']}t: "
        f"max relative difference {r['max_rel_diff']:.3g}"
        for r in bad
    )
    return "\n".join(lines)


def _dump_json(payload: dict) -> str:
    """Indented JSON, except one line per record (greppable, diffable)."""
    head = json.dumps({k: v for k, v in payload.items() if k != "records"}, indent=1)
    records = ",\n  ".join(json.dumps(r) for r in payload["records"])
    return f'{head[:-2]},\n "records": [\n  {records}\n ]\n}}\n'
