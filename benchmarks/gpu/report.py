"""The table and ratios of ``python -m benchmarks.gpu``: plain functions of its rows."""

from __future__ import annotations

TORCH_PRECISION = {"float32": "float32", "mixed_bfloat16": "autocast bf16",
                   "mixed_float16": "autocast fp16 + GradScaler"}
MODEL_TITLE = {"resnet50": "ResNet-50", "resnet18": "ResNet-18"}


def _figure(row: dict, mode: str):
    figures = row.get(mode)
    return figures["images_per_s"] if figures else None


def _torch_variant(row: dict) -> str:
    return "torch.compile" if row["compiled"] else "eager"


def ratios(rows: list[dict]) -> list[dict]:
    """ours/torch images/s for each of our measured rows and each torch row of the same model,
    sizes, precision and mode."""
    out = []
    for ours in (r for r in rows if r["framework"] == "keras"):
        for torch_row in rows:
            same = all(torch_row[k] == ours[k]
                       for k in ("model", "input_shape", "batch", "precision"))
            if torch_row["framework"] != "torch" or not same:
                continue
            for mode in ours["modes"]:
                a, b = _figure(ours, mode), _figure(torch_row, mode)
                if a and b:
                    out.append({"model": ours["model"], "precision": ours["precision"],
                                "mode": mode, "torch": _torch_variant(torch_row),
                                "ours_images_per_s": a, "torch_images_per_s": b,
                                "ratio": a / b})
    return out


def _fmt(value, digits=0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _rate(value) -> str:
    """Images/s: whole numbers on a GPU, three significant digits for the CPU's tiny runs."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio_cell(found: list[dict], row: dict, mode: str) -> str:
    if row["framework"] != "keras":
        return ""
    by_variant = {r["torch"]: r["ratio"] for r in found
                  if (r["model"], r["precision"], r["mode"]) ==
                  (row["model"], row["precision"], mode)}
    return " / ".join(_fmt(by_variant.get(v), 2) for v in ("eager", "torch.compile"))


def _peak_cell(row: dict) -> str:
    peaks = [(row.get(m) or {}).get("peak_mib") for m in ("train", "infer")]
    if all(p is None for p in peaks):
        return "n/a" if row.get("train") or row.get("infer") else "–"
    return " / ".join(_fmt(p) for p in peaks)


def _row_cells(row: dict, found: list[dict]) -> list[str]:
    h, w, c = row["input_shape"]
    if row["framework"] == "keras":
        who, precision, compiled = "ours, Keras-JAX", row["precision"], "jax.jit (XLA)"
    else:
        who, precision = "torchvision", TORCH_PRECISION[row["precision"]]
        compiled = _torch_variant(row)
    notes = "; ".join(row.get("notes") or [])
    if row.get("status") not in (None, "ok") and not notes.startswith(row["status"]):
        notes = f"{row['status']}: {notes}" if notes else row["status"]
    first = [(row.get(m) or {}).get("first_step_s") for m in ("train", "infer")]
    return [f"{MODEL_TITLE.get(row['model'], row['model'])} {row['stem']} {h}x{w}x{c} "
            f"b{row['batch']}", who, precision, compiled,
            _rate(_figure(row, "train")), _rate(_figure(row, "infer")),
            _ratio_cell(found, row, "train"), _ratio_cell(found, row, "infer"),
            _peak_cell(row), " / ".join(_fmt(s, 1) for s in first), notes.replace("|", "/")]


HEADER = ["model", "framework", "precision", "compiled", "train img/s", "infer img/s",
          "train ours/torch (eager / compile)", "infer ours/torch (eager / compile)",
          "peak MiB (train / infer)", "first step s (train / infer)", "notes"]


def title(result: dict) -> list[str]:
    v = result["versions"]
    where = (f"on {result['gpu_name']}" if result["device"] == "gpu" and result["gpu_name"]
             else "on the CPU, tiny sizes: a test of the run, not a GPU figure"
             if result["size"] == "tiny" else f"on the {result['device'].upper()}, no row measured"
             if result["device"] == "gpu" else "on the CPU")
    stacks = [f"jax {v.get('jax', '?')} ({v.get('jax_backend', '?')}), keras {v.get('keras', '?')}",
              f"torch {v.get('torch', '?')}, torchvision {v.get('torchvision', '?')}"
              + (f", CUDA {v['cuda']}, cuDNN {v['cudnn']}" if v.get("cudnn") else "")]
    return [f"ResNet images/s {where}",
            "",
            f"{result['date']} · {' · '.join(stacks)} · Python {result['python']} · "
            f"host: {result['host']}",
            f"command: `{result['command']}`",
            "Median of timed repeats after warm-up; synthetic data on the device; SGD momentum "
            "0.9; ours: the compiled step model.fit runs on JAX; ratios: ours over torch's "
            "eager / torch.compile row of the same precision."]


def markdown(result: dict) -> str:
    found = result["ratios"]
    lines = title(result) + ["", "| " + " | ".join(HEADER) + " |",
                             "|" + "---|" * len(HEADER)]
    order = {"keras": 0, "torch": 1}
    rows = sorted(result["rows"], key=lambda r: (
        list(MODEL_TITLE).index(r["model"]) if r["model"] in MODEL_TITLE else 9,
        ("float32", "mixed_bfloat16", "mixed_float16").index(r["precision"]),
        order[r["framework"]], r["compiled"]))
    for row in rows:
        lines.append("| " + " | ".join(_row_cells(row, found)) + " |")
    return "\n".join(lines)
