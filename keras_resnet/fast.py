"""Device-dependent defaults that keep the models on their fast path."""

from __future__ import annotations

import os


def default_jit_compile(gpus=None) -> bool:
    """Whether to XLA-compile training/inference steps by default: on with a GPU, off on CPU.

    On CPU, XLA made these models several times slower (``python -m benchmarks.model.bench
    --jit on`` against the default; figures in README), because its CPU convolutions do
    not use oneDNN. On GPUs XLA fuses batch norm and ReLU into the cuDNN
    convolutions. This is what Keras's ``jit_compile="auto"`` resolves to for these models; it is
    spelled out so that the benchmarks, ``training.fit`` and the README agree. ``gpus``: the
    visible GPU devices when the caller has listed them already.
    """
    if gpus is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    return bool(gpus)


# oneDNN's ISA names, lowest first (its cpu_isa_t); a cap below AVX512_CORE_BF16 leaves
# bfloat16 without native kernels. AMX appears only above it.
_ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16",
                "AVX10_1_512_AMX", "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16",
                "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.split(":", 1)[0].strip() in ("flags", "Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bfloat16(flags=None, environ=None) -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 in hardware for TensorFlow's oneDNN kernels, and why.

    Native means AVX512_BF16 or AMX-BF16 in the CPU's flags, oneDNN enabled and not capped below
    AVX512_CORE_BF16 (``ONEDNN_MAX_CPU_ISA``). Elsewhere bfloat16 is emulated in float32 and
    runs slower than float32 itself, or, with an ISA cap on a bf16 CPU, has no convolution kernel
    at all. ``flags``/``environ``: the CPU flags and environment to judge (default: this
    machine's).
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    environ = os.environ if environ is None else environ
    have = [f for f in _BF16_FLAGS if f in flags]
    if not have:
        return False, "the CPU has no avx512_bf16 or amx_bf16"
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("0", "false", "off"):
        return False, f"{have[0]} present, but TF_ENABLE_ONEDNN_OPTS turns oneDNN off"
    cap = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in ("ALL", "DEFAULT") and (
            cap not in _ONEDNN_ISAS
            or _ONEDNN_ISAS.index(cap) < _ONEDNN_ISAS.index("AVX512_CORE_BF16")):
        return False, f"{have[0]} present, but ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below it"
    return True, f"the CPU has {' and '.join(have)}"


def default_cpu_precision(flags=None, environ=None) -> tuple[str, str]:
    """What ``--precision auto`` trains in on a CPU, and the reason in a few words."""
    native, why = native_bfloat16(flags, environ)
    return ("mixed_bfloat16", why) if native else ("float32", why)
