"""Build the compiled kernel set (``fastcnn._kernels``) from ``csrc/``.

Environment switches:

* ``FASTCNN_DEBUG=1``: Cython bounds and wraparound checks on, ``-O0 -g``.
* ``FASTCNN_SANITIZE=address,undefined``: also build with those sanitizers
  (load the runtime with ``LD_PRELOAD`` when running; see the README).
* ``FASTCNN_OPENMP=0``: build without OpenMP even if the compiler has it.

OpenMP is detected by compiling and linking a tiny program; without it the
kernels build serially and the build says so.
"""

import os
import platform
import sys
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ("unfold", "pool", "adaptive", "conv", "direct", "winograd", "openmp", "norm",
           "activation", "loss", "optim", "resample")
# Modules built again for wider vector units (``csrc/NAME_ISA.pyx`` includes
# ``NAME.pyx``), on x86-64 only, with the compiler flags below; fastcnn
# imports the widest build the CPU runs. Their loops compute every cell
# alone (no reassociation, no contraction), so the wider vectors give the
# same bits.
SIMD_KERNELS = ("norm", "activation") if platform.machine().lower() in ("x86_64", "amd64") else ()
SIMD_FLAGS = {"avx2": ("-mavx2", "/arch:AVX2"), "avx512": ("-mavx512f", "/arch:AVX512")}


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler):
    """Return the OpenMP compile/link flag that works with `compiler`, or None."""
    if os.environ.get("FASTCNN_OPENMP", "1").strip() == "0":
        return None
    flag = "/openmp" if compiler.compiler_type == "msvc" else "-fopenmp"
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1;
        }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check_openmp.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objects, "check_openmp", output_dir=tmp, extra_postargs=[flag])
        except Exception:  # any compiler or linker failure means "no OpenMP"
            return None
    return flag


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # One compiler per core unless --parallel/-j says otherwise: the
        # extensions are independent, and a build is mostly C compilation.
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        flag = _openmp_flags(self.compiler)
        if flag is None:
            warnings.warn("fastcnn: the C compiler has no OpenMP; kernels will run on one thread")
        debug = _flag("FASTCNN_DEBUG")
        sanitize = os.environ.get("FASTCNN_SANITIZE", "").strip()
        for ext in self.extensions:
            base, _, isa = ext.name.rpartition(".")[2].rpartition("_")
            if base in SIMD_KERNELS and isa in SIMD_FLAGS:
                gcc, msvc = SIMD_FLAGS[isa]
                ext.extra_compile_args.append(msvc if self.compiler.compiler_type == "msvc" else gcc)
            if flag:
                ext.extra_compile_args.append(flag)
                ext.extra_link_args.append(flag)
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args.append("-O0" if debug else "-O3")
                # Each product is rounded before it is added, as in the NumPy
                # twins: a fused multiply-add would change the last bit. No
                # one reads the kernels' floating-point exception flags nor
                # errno: the compiler may then vectorise a select on a
                # comparison (as LeakyReLU's) and a square root (as Adam's)
                # instead of branching. Neither changes a result.
                ext.extra_compile_args += [
                    "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]
                if debug or sanitize:
                    ext.extra_compile_args += ["-g", "-fno-omit-frame-pointer"]
                if sanitize:
                    ext.extra_compile_args.append(f"-fsanitize={sanitize}")
                    ext.extra_link_args.append(f"-fsanitize={sanitize}")
        super().build_extensions()


debug = _flag("FASTCNN_DEBUG") or bool(os.environ.get("FASTCNN_SANITIZE", "").strip())
# C headers the kernels include: a change to one rebuilds the extensions.
HEADERS = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h"))
extensions = [
    Extension(f"fastcnn._kernels.{name}", [os.path.join("csrc", f"{name}.pyx")], depends=HEADERS)
    for name in KERNELS + tuple(f"{name}_{isa}" for isa in SIMD_FLAGS for name in SIMD_KERNELS)
]

setup(
    ext_modules=cythonize(
        extensions,
        nthreads=os.cpu_count() or 1,
        include_path=["csrc"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
