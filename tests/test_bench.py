"""Smoke test of the benchmark's code path (``fastcnn bench``): tiny shapes, one repeat.

Nothing here asserts a timing: machines are noisy. It checks that every
benchmark runs on every available implementation, that the results agree,
and that the table, the JSON and the command line carry the expected rows.
"""

import io
import json

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
            "--budget", "0.001", "--json", str(path)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("fastcnn bench")
    for word in ("numpy", "threadpool", "torch", "max_pool2d_backward", "copy"):
        assert word in printed
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


@pytest.mark.parametrize(
    "args",
    [["--threads", "0"], ["--kernels", "nope"], ["--shapes", "huge"], ["--dtypes", "float16"],
     ["--repeats", "0"]],
)  # fmt: skip
def test_command_line_rejects_bad_options(args, capsys):
    assert cli_main(["bench", *args]) == 2
    assert "fastcnn bench: error:" in capsys.readouterr().err


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
