"""Build fastnn's extensions: the C core (csrc/) compiled once into a static
library, and the Cython modules linked against it.

- csrc/*.c are compiled in parallel (one job per CPU), each object cached
  under build/fastnn-core/ by a hash of its source, every csrc header and
  the flags, then archived; each extension pulls from the archive only the
  objects it calls.
- An extension whose inputs (its .pyx, fastnn's .pxd files, the core, the
  flags, the Cython, numpy and Python versions) hash to what built the .so
  in place is not built again: a second `pip install -e .` (whose build
  directory is a new temporary one each time) compiles nothing.

FASTNN_DEBUG=1 builds the debug variant: -O0 -g and Cython bounds checks.
CFLAGS/LDFLAGS from the environment are honoured (sanitizer builds, see
.ci/run) and are part of the hash.  No -march=native: CPU-specific code goes
through target_clones.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTNN_DEBUG", "") not in ("", "0")
HERE = os.path.dirname(os.path.abspath(__file__))

# Every csrc/*.c is part of the core; the slowest compiles start first.
_SLOW_FIRST = ["csrc/net_f64.c", "csrc/net_f32.c", "csrc/train.c"]
CORE_SOURCES = [s for s in _SLOW_FIRST if os.path.exists(s)] + sorted(
    set(glob.glob("csrc/*.c")) - set(_SLOW_FIRST))
CORE_HEADERS = sorted(glob.glob("csrc/*.h"))
# -fno-math-errno: sqrt and friends need not set errno (so they vectorize).
# -fno-trapping-math: FP operations may be computed speculatively, which lets
#   GCC turn the kernels' selects (z < 0 ? e*s : s) into blends and vectorize
#   them on AVX2 and SSE2 too.  Results are unchanged: no reassociation, no
#   finite-math assumptions (not -ffast-math).
# -fopenmp-simd: honour "omp simd" (vectorization hints) without OpenMP threads.
# -fno-wrapv: undoes the -fwrapv that CPython's own CFLAGS hand every
#   extension.  Neither our C nor Cython's relies on wrapping signed
#   overflow (the UBSan suite checks ours), and with it GCC must keep the
#   kernels' int64 index arithmetic exact instead of simplifying it (~6% of
#   a small network's step).
CFLAGS = ["-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
          "-DFNN_OMP_SIMD", "-fno-wrapv", "-Wno-unused-function", "-pthread"]
# -g0 in release builds: CPython's CFLAGS ask for -g, which costs a third
# of the compile time (net_f64.c: 45 s against 33 s) for debug information a
# user does not read.  A -g in the environment's CFLAGS (the sanitizer
# builds) keeps it.
_KEEP_G = "-g" in os.environ.get("CFLAGS", "").split()
CFLAGS += ["-O0", "-g"] if DEBUG else ["-O3"] if _KEEP_G else ["-g0", "-O3"]
# The Cython modules are glue around the core (argument checks, buffer
# set-up); -O2 compiles them in three quarters of the time of -O3.
CYTHON_CFLAGS = CFLAGS if DEBUG else CFLAGS[:-1] + ["-O2"]
# The sources that take longest to compile (started first).
SLOW_SOURCES = ("net_f32.c", "net_f64.c", "train.c", "many.c")
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
DIRECTIVES = {"language_level": 3, "boundscheck": DEBUG, "wraparound": False,
              "initializedcheck": DEBUG, "cdivision": True,
              "embedsignature": True}


def _env_flags():
    return " ".join(os.environ.get(k, "") for k in ("CC", "CFLAGS", "LDFLAGS",
                                                    "LDSHARED"))


def _digest(paths, *extra):
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        with open(os.path.join(HERE, p), "rb") as f:
            h.update(f.read())
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:20]


class BuildExt(build_ext):
    """build_ext with the core library, one pool of compile jobs for the
    core and the Cython modules, and content hashes instead of mtimes."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def _compiler(self):
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
        cc = new_compiler(compiler=self.compiler, force=self.force)
        customize_compiler(cc)
        if self.include_dirs:
            cc.set_include_dirs(self.include_dirs)
        return cc

    def run(self):
        if not self.extensions:
            return
        cc = self._compiler()
        cache = os.path.join(HERE, "build", "fastnn-core")
        os.makedirs(cache, exist_ok=True)
        flags = CFLAGS + ["-Icsrc"]
        common = (flags, _env_flags(), cc.compiler_so)
        objects, jobs = [], []
        for src in CORE_SOURCES:
            key = _digest([src] + CORE_HEADERS, *common)
            obj = os.path.join(cache, f"{os.path.basename(src)[:-2]}-{key}.o")
            objects.append(obj)
            if not os.path.exists(obj):
                jobs.append((cc, src, obj, {"extra_postargs": flags}))
        lib = os.path.join(cache, "libfastnn_core-" + _digest(
            [], [os.path.basename(o) for o in objects]) + ".a")
        stale = []
        for ext in self.extensions:
            ext._fastnn_key = self._ext_key(ext, lib)
            if self.force or not self._up_to_date(ext):
                stale.append(ext)
        if stale:
            from Cython.Build import cythonize
            done = {e.name: e for e in cythonize(
                stale, force=True, quiet=True, nthreads=0,
                compiler_directives=DIRECTIVES)}
            for ext in stale:
                (c_file,) = done[ext.name].sources
                obj = os.path.join(cache, f"{ext.name}-{ext._fastnn_key}.o")
                jobs.insert(2, (cc, c_file, obj, {
                    "macros": ext.define_macros, "include_dirs": ext.include_dirs,
                    "extra_postargs": ext.extra_compile_args}))
                ext.sources = []
                ext.extra_objects = [obj, lib]
                ext.depends = [obj, lib]
        if jobs:
            # Longest first, so that the two whole-network steps (a third of
            # the build's CPU time) do not start last and run alone.
            jobs.sort(key=lambda j: os.path.basename(j[1]) not in SLOW_SOURCES)
            with ThreadPoolExecutor(max(1, self.parallel)) as pool:
                list(pool.map(lambda j: _compile(cache, *j), jobs))
        if not os.path.exists(lib):
            tmp = lib + ".tmp"
            if os.path.exists(tmp):
                os.remove(tmp)
            subprocess.check_call([sysconfig.get_config_var("AR") or "ar",
                                   "rcs", tmp] + objects)
            os.replace(tmp, lib)
        self._stale = {e.name for e in stale}
        super().run()                  # links the stale, copies the others
        for ext in stale:
            with open(self._stamp_path(ext), "w") as f:
                f.write(ext._fastnn_key)

    def _ext_key(self, ext, lib):
        import numpy
        import Cython
        pyx = [s for s in ext.sources if s.endswith(".pyx")]
        pxd = sorted(glob.glob("fastnn/*.pxd"))
        return _digest(pyx + pxd, os.path.basename(lib), CYTHON_CFLAGS, MACROS,
                       DIRECTIVES, _env_flags(), Cython.__version__,
                       numpy.__version__, sys.version)

    def _inplace_path(self, ext):
        modpath = ext.name.split(".")
        return os.path.join(HERE, *modpath[:-1],
                            modpath[-1] + sysconfig.get_config_var("EXT_SUFFIX"))

    def _stamp_path(self, ext):
        os.makedirs(os.path.join(HERE, "build", "fastnn-stamps"), exist_ok=True)
        return os.path.join(HERE, "build", "fastnn-stamps", ext.name + ".key")

    def _up_to_date(self, ext):
        try:
            with open(self._stamp_path(ext)) as f:
                key = f.read().strip()
        except OSError:
            return False
        return key == ext._fastnn_key and os.path.exists(self._inplace_path(ext))

    def build_extension(self, ext):
        out = self.get_ext_fullpath(ext.name)
        if ext.name not in self._stale:
            # built before from the same inputs: reuse the in-place module
            src = self._inplace_path(ext)
            if os.path.abspath(src) != os.path.abspath(out):
                os.makedirs(os.path.dirname(out), exist_ok=True)
                shutil.copy2(src, out)
            return
        super().build_extension(ext)


def _compile(cache, cc, src, obj, kwargs):
    """Compile src to obj (through a private directory: jobs run at once)."""
    tmp_dir = os.path.join(cache, "tmp-" + os.path.basename(obj))
    out = cc.compile([src], output_dir=tmp_dir, **kwargs)
    os.replace(out[0], obj)
    shutil.rmtree(tmp_dir, ignore_errors=True)


def ext(name, pyx):
    import numpy as np
    return Extension(name, [pyx], include_dirs=["csrc", np.get_include()],
                     extra_compile_args=CYTHON_CFLAGS,
                     extra_link_args=["-pthread"],
                     define_macros=MACROS)


# One extension per fastnn/*.pyx, each linked against the core.
setup(ext_modules=[ext("fastnn." + os.path.basename(p)[:-4], p)
                   for p in sorted(glob.glob("fastnn/*.pyx"))],
      cmdclass={"build_ext": BuildExt})
