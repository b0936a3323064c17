"""Smoke test of the benchmark's code path (``fastcnn bench``): tiny shapes, one repeat.

Nothing here asserts a timing: machines are noisy. It checks that every
benchmark runs on every available implementation, that the results agree,
and that the table, the JSON and the command line carry the expected rows.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastcnn
from fastcnn import bench
from fastcnn.cli import main as cli_main

TINY = bench.Shape("tiny", (2, 3, 9, 8), 4, 3, 1, 3, 2, 1, train=True)


def _available_impls():
    impls = ["numpy"]
    if fastcnn._backend.compiled_available():
        impls.insert(0, "cython")
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        impls.append("torch")
    return impls


def _expected_rows(dtypes, threads):
    rows = set()
    for t in threads:
        for dtype in dtypes:
            for op in bench.OPS:
                if op == "train_step" and dtype != "float32":
                    continue
                levels = ("kernel", "op") if op in fastcnn._backend.KERNEL_NAMES else ("op",)
                if op == "copy":
                    levels = ("baseline",)
                rows.update((t, dtype, op, level) for level in levels)
    return rows


def test_bench_runs_every_benchmark_and_reports_it():
    impls = _available_impls()
    threads = [1, 2]
    out = io.StringIO()
    records = bench.bench(
        shapes=[TINY], dtypes=["float32", "float64"], threads=threads, impls=impls,
        repeats=1, budget=1e-3, min_sample=0, file=out,
    )  # fmt: skip
    rows = _expected_rows(["float32", "float64"], threads)
    assert {(r["threads"], r["dtype"], r["op"], r["level"]) for r in records} == rows
    for t, dtype, op, level in rows:
        got = {r["impl"] for r in records if (r["threads"], r["dtype"], r["op"], r["level"]) == (t, dtype, op, level)}
        expected = set(impls) - ({"cython"} if op == "copy" else set())
        assert got == expected, (t, dtype, op, level)
    for r in records:
        assert r["shape"] == "tiny" and r["repeats"] == 1 and r["number"] >= 1
        assert 0 < r["min_s"] <= r["median_s"] and len(r["samples_s"]) == 1
        if r["op"] in fastcnn._backend.KERNEL_NAMES or r["op"] == "copy":
            assert r["nbytes"] > 0 and r["gbps"] > 0 and r["gflops"] is None
        if r["op"].startswith("conv2d"):
            assert r["flops"] > 0 and r["gflops"] > 0
        # Every implementation computed what the compiled kernels computed.
        assert r.get("agrees", True), r
    conv = [r for r in records if r["op"] == "conv2d"][0]
    assert conv["flops"] == 2 * 2 * 4 * 3 * 3 * 3 * 9 * 8
    fwd_bwd = [r for r in records if r["op"] == "conv2d_fwd_bwd"][0]
    assert fwd_bwd["flops"] == 3 * conv["flops"]
    json.loads(json.dumps(records))  # plain JSON types only

    printed = out.getvalue()
    table = bench.format_table(records)
    assert table.splitlines()[0].split()[:3] == ["op", "level", "cython"]
    for text in (printed, table):
        for op in bench.OPS:
            assert op in text
        assert "-- 2 threads, float64, tiny: x=(2x3x9x8), conv 4 3x3 p1, pool 3x3 s2 p1" in text


def test_bench_does_not_change_threads_or_backend():
    threads, backend = fastcnn.get_num_threads(), fastcnn.get_backend()
    bench.bench(ops=["avg_pool2d"], shapes=[TINY], dtypes=["float32"], threads=[1],
                impls=["numpy"], repeats=1, budget=1e-3, min_sample=0, verbose=False)  # fmt: skip
    assert (fastcnn.get_num_threads(), fastcnn.get_backend()) == (threads, backend)


def test_command_line_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--kernels", "max_pool2d_backward,copy", "--shapes", "mnist",
            "--dtypes", "float32", "--threads", "1", "--quick", "--repeats", "1",
            "--budget", "0.001", "--json", str(path), "--verbose"]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("fastcnn bench")
    for word in ("numpy", "blas", "torch", "max_pool2d_backward", "copy"):
        assert word in printed
    assert "-- 1 thread, float32, mnist: " in printed  # the full listing
    payload = json.loads(path.read_text())
    assert payload["environment"]["numpy"] == np.__version__
    ops = {(r["op"], r["level"]) for r in payload["records"]}
    assert ops == {("max_pool2d_backward", "kernel"), ("max_pool2d_backward", "op"), ("copy", "baseline")}
    assert all(r["median_s"] > 0 and r["threads"] == 1 for r in payload["records"])


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    records = bench.bench(ops=["im2col", "conv2d"], shapes=[TINY], dtypes=["float32"], threads=[1],
                          repeats=1, budget=1e-3, min_sample=0, verbose=False)  # fmt: skip
    path = tmp_path / "speedup.png"
    bench.plot(records, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_step_networks_match_their_torch_twins():
    # The bench times the same network in both libraries: in eval mode (no
    # dropout) the twin's logits equal fastcnn's.
    torch = pytest.importorskip("torch")
    from fastcnn.bench import cases

    for name in ("mnist", "cifar-demo", "cifar-vgg"):
        shape = cases.SHAPES[name]
        model, x, _ = cases.demo_network(shape)
        x = x[:4]
        net = cases._torch_twin(model, torch).eval()
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.forward(x, training=False), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--threads", "9999"], "argument --threads: expected comma-separated thread counts, each a positive int up to"),
    (["--threads", "0"], "argument --threads: expected comma-separated thread counts, each a positive int up to"),
    (["--threads", "1,two"], "argument --threads: expected comma-separated thread counts, each a positive int up to"),
    (["--budget", "nan"], "argument --budget: expected a positive finite float, got 'nan'"),
    (["--budget", "inf"], "argument --budget: expected a positive finite float, got 'inf'"),
    (["--budget", "0"], "argument --budget: expected a positive finite float, got '0'"),
    (["--repeats", "0"], "argument --repeats: expected a positive int, got '0'"),
    (["--json", "/no/such/dir/x.json"], "argument --json: directory '/no/such/dir' of '/no/such/dir/x.json' does not exist"),
    (["--json", "{tmp}"], "argument --json: expected a file name, got the directory"),
    (["--plot", "/no/such/dir/x.png"], "argument --plot: directory '/no/such/dir' of '/no/such/dir/x.png' does not exist"),
    (["--plot", "{tmp}/chart.bmpx"], "argument --plot: expected a file name ending in one of "),
    (["--kernels", "nope"], "argument --kernels: expected a comma-separated subset of im2col,"),
    (["--shapes", "huge"], "argument --shapes: expected a comma-separated subset of cifar,"),
    (["--dtypes", "float16"], "argument --dtypes: expected a comma-separated subset of float32,float64, got 'float16'"),
    (["--impls", "cuda"], "argument --impls: expected a comma-separated subset of cython,numpy,torch, got 'cuda'"),
])  # fmt: skip
def test_command_line_rejects_bad_options_before_any_work(monkeypatch, tmp_path, capsys, args, message):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", *(a.format(tmp=tmp_path) for a in args)])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"fastcnn bench: error: {message}"), err


def test_impls_torch_without_pytorch_is_a_usage_error(tmp_path):
    """In a subprocess whose ``import torch`` fails, as it does where PyTorch is not installed."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("No module named \'torch\'")\n')
    fastcnn_root = os.path.dirname(os.path.dirname(fastcnn.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), fastcnn_root]))
    # Run from tmp_path: `python -m` puts the working directory first on
    # sys.path, so it must hold the failing torch and no other fastcnn (a
    # source checkout's root would shadow the build, fastcnn's folder - an
    # installed one's site-packages - may hold the real torch).
    done = subprocess.run([sys.executable, "-m", "fastcnn", "bench", "--impls", "numpy,torch"],
                          env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "fastcnn bench: error: argument --impls: torch: PyTorch is not installed: pip install torch"
    )


def test_impls_cython_without_the_compiled_kernels_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(bench.cli, "compiled_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--impls", "cython,numpy"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fastcnn bench: error: argument --impls: cython: the compiled kernels are not built "
        "(see `fastcnn info`); choose numpy or torch"
    )


@pytest.fixture(scope="module")
def default_run_records():
    """Records shaped like a default run's (every shape, dtype, thread count and benchmark),
    made by copying a run on a tiny shape: what the summary prints does not depend on the timings."""
    threads = sorted({1, fastcnn._backend.default_num_threads()})
    tiny = bench.bench(shapes=[TINY], threads=threads, impls=_available_impls(), repeats=1,
                       budget=1e-3, min_sample=0, verbose=False)  # fmt: skip
    return [dict(r, shape=name) for name in bench.SHAPES for r in tiny]


@pytest.fixture
def fake_bench(monkeypatch, default_run_records):
    """Replace the timing run of ``fastcnn bench`` by `default_run_records`; record its arguments."""
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return default_run_records

    monkeypatch.setattr(bench.cli, "bench", fake)
    return calls


def _summary_table(out: str) -> dict:
    """``{(op, level): {column: cell}}`` from the summary table in `out`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("op "))
    width = 12
    header = lines[start][32:]
    columns = [header[i : i + width].strip() for i in range(0, len(header), width)]
    table = {}
    for line in lines[start + 1 :]:
        if not line[:23].strip() or line[:23].split()[0] not in bench.OPS:
            break
        cells = line[32:].split()
        table[(line[:23].split()[0], line[24:32].strip())] = dict(zip(columns, cells))
    return table


def test_quick_prints_a_compact_summary(fake_bench, default_run_records, capsys):
    assert cli_main(["bench", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) < 60, out
    assert fake_bench[0]["verbose"] is False and fake_bench[0]["quick"] is True
    assert "-- 1 thread" not in out  # no full listing
    assert "--verbose" in out and "--verbose" in err
    table = _summary_table(out)
    expected_rows = {(op, level) for op in bench.OPS if op != "copy"  # no compiled copy to compare with
                     for level in bench.cases.levels(op)}  # fmt: skip
    assert set(table) == expected_rows
    # A cell is the geometric mean of the ratios over the cases: here copies of
    # the tiny shape, so over its two dtypes.
    times = {(r["dtype"], r["impl"]): r["median_s"] for r in default_run_records
             if (r["op"], r["level"], r["threads"], r["shape"]) == ("col2im", "kernel", 1, "cifar")}  # fmt: skip
    ratios = [times[d, "numpy"] / times[d, "cython"] for d in ("float32", "float64")]
    assert table["col2im", "kernel"]["np/cy 1t"] == f"{np.sqrt(ratios[0] * ratios[1]):.2f}"


def test_verbose_prints_the_full_listing(fake_bench, capsys):
    assert cli_main(["bench", "--quick", "--verbose"]) == 0
    assert fake_bench[0]["verbose"] is True
    out = capsys.readouterr().out
    assert "summary" not in out and "columns      ms: median per call" in out


def test_an_output_that_cannot_be_written_after_the_run_is_reported(monkeypatch, tmp_path, capsys,
                                                                    default_run_records):  # fmt: skip
    """The directory of --json was checked, then vanished during the run."""
    directory = tmp_path / "out"
    directory.mkdir()

    def run_that_removes_the_directory(**kwargs):
        shutil.rmtree(directory)
        return default_run_records

    monkeypatch.setattr(bench.cli, "bench", run_that_removes_the_directory)
    assert cli_main(["bench", "--quick", "--json", str(directory / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"fastcnn bench: error: cannot write {directory / 'x.json'}")


def test_summary_of_one_implementation_on_one_thread_count_says_so(default_run_records):
    alone = [r for r in default_run_records if r["impl"] == "cython" and r["threads"] == 1]
    assert bench.format_summary(alone).startswith("summary      nothing to compare")
