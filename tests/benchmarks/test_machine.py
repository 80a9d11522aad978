from benchmarks import machine


def test_describe_names_cpu_isa_and_the_onednn_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    model, isa = machine.cpu_model_and_isa()
    plain = machine.describe()
    assert plain.startswith(model) and isa in plain and "ONEDNN" not in plain
    assert isa in ("AVX-512", "AVX2", "no AVX2", "unknown ISA")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine.describe() == plain + ", ONEDNN_MAX_CPU_ISA=AVX2"


def test_isa_read_from_cpu_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx avx2 fma\n")
    real_open = open
    monkeypatch.setattr(machine, "open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k), raising=False)
    assert machine.cpu_model_and_isa() == ("Test CPU 9000", "AVX2")
