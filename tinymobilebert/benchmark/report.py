"""The benchmark report: one printed table of ratios, with pass/miss marks for the targets."""

from __future__ import annotations

from .dynabert import format_dynabert
from .measure import IMPLS, MODES, NOISY_STALL, TARGET_INFER_VS_TORCH, TARGET_KERNEL_SPEEDUP, TARGET_PAPER_FRACTION_OF_PEAK, TARGET_TRAIN_VS_TORCH, TARGET_WARM_FIRST_STEP_S
from .token_dropping import format_token_dropping


# ------------------------------------------------------------------------------ report


def _f(x, fmt="{:.2f}", none="-"):
    return none if x is None else fmt.format(x)


def _mark(ok):
    return "" if ok is None else ("  pass" if ok else "  MISS")


def _time_cell(e):
    if e is None:
        return "-"
    if "skipped" in e:
        return "skipped"
    if "error" in e:
        return "error"
    t = e["time"]
    busy = "!" if t.get("cpu_stall", 0.0) > NOISY_STALL else " "
    return f"{t['median'] * 1e3:8.1f} [{t['min'] * 1e3:.0f}-{t['max'] * 1e3:.0f}]{busy}"


def format_report(res) -> str:
    """The printed report: machine, step times, ratios, memory, kernels, JIT, targets."""
    m, rat, lines = res["machine"], res["ratios"], []
    add = lines.append
    add(f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} threads everywhere; python {m['python']}, "
        f"numpy {m['numpy']} ({m['blas']}), numba {m['numba']}, torch {m['torch'] or 'not installed'}, "
        f"transformers {m['transformers'] or 'not installed'}")
    add(f"Load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m.get('loadavg_end', ()))} (other load on the machine makes times noisy)")
    pk = res.get("matmul_peak", {})
    add("Matmul peak (float32, GFLOP/s, best of repeats): " + ", ".join(f"{k} {v:.1f}" for k, v in pk.items()
                                                                          if isinstance(v, float) and k != "wall_s"))
    add("")
    add(f"Step times, ms: median [min-max] over repeats; ! = tasks waited for a CPU during > {NOISY_STALL:.0%} of the")
    add("timed runs (/proc/pressure/cpu): other load competed with the measurement; treat as noisy")
    add(f"{'size':6s} {'mode':5s} {'tinymobilebert':>24s} {'numpy-twins':>24s} {'pytorch':>24s}")
    for size, st in res["steps"].items():
        for mode in MODES:
            cells = [_time_cell(st.get(f"{i}/{mode}")) for i in IMPLS]
            add(f"{size:6s} {mode:5s} " + " ".join(f"{c:>24s}" for c in cells))
    reasons = sorted({e["skipped"] for st in res["steps"].values() for k, e in st.items()
                      if k.startswith("pytorch/") and "skipped" in e})
    if reasons:
        add("pytorch columns: " + "; ".join(reasons))
    add("")
    add("Ratios (time: lower is better for ours; fraction of peak: FLOPs / time / NumPy matmul peak,")
    add("        'done' = the FLOPs performed: ours trains with MLM logits at the 15% labelled positions,")
    add("        transformers at every position, inference everywhere at every position; 'useful' = at the labelled 15%)")
    add(f"{'size':6s} {'mode':5s} {'ours/torch':>16s} {'ours/twins':>10s} {'ours peak done/useful':>21s} "
        f"{'twins peak':>10s} {'torch peak':>10s}")
    for size in res["steps"]:
        for mode in MODES:
            r = rat[size][mode]
            limit = TARGET_TRAIN_VS_TORCH.get(size) if mode == "train" else (
                TARGET_INFER_VS_TORCH if size in TARGET_TRAIN_VS_TORCH else None)
            vt = r["ours_vs_torch"]
            mark = _mark(None if vt is None or limit is None else vt <= limit)
            frac = f"{_f(r['tinymobilebert_fraction_of_peak'], '{:.1%}')}/{_f(r['tinymobilebert_useful_fraction_of_peak'], '{:.1%}')}"
            if size == "paper" and mode == "train" and r["tinymobilebert_fraction_of_peak"] is not None:
                frac += _mark(r["tinymobilebert_fraction_of_peak"] >= TARGET_PAPER_FRACTION_OF_PEAK).rstrip()
            torch_cell = _f(vt, "{:.2f}x") if "skipped" not in res["steps"][size].get(f"pytorch/{mode}", {}) else "skipped"
            add(f"{size:6s} {mode:5s} {torch_cell + mark:>16s} {_f(r['ours_vs_twins'], '{:.2f}x'):>10s} {frac:>21s} "
                f"{_f(r['numpy-twins_fraction_of_peak'], '{:.1%}'):>10s} {_f(r['pytorch_fraction_of_peak'], '{:.1%}'):>10s}")
    add("")
    add("Memory, MB: peak RSS of the whole process (ru_maxrss) / peak minus RSS once the model is built")
    add(f"{'size':6s} {'mode':5s} {'tinymobilebert':>15s} {'numpy-twins':>15s} {'pytorch':>15s} {'ours/torch':>15s}")
    for size, st in res["steps"].items():
        for mode in MODES:
            cells = []
            for i in IMPLS:
                e = st.get(f"{i}/{mode}") or {}
                cells.append(f"{e['peak_rss_mb']:.0f} / {e['peak_over_model_mb']:.0f}" if "peak_rss_mb" in e else "-")
            r = rat[size][mode]
            ratio = f"{_f(r['peak_rss_vs_torch'])} / {_f(r['peak_over_model_vs_torch'])}"
            add(f"{size:6s} {mode:5s} " + " ".join(f"{c:>15s}" for c in cells) + f" {ratio:>15s}")
    dist = res.get("distill")
    if dist:
        add("")
        add("Distillation step (teacher forward without gradients + student forward/backward + FMT and AT on every "
            "layer + LAMB), ms: median [min-max]; peak RSS, MB")
        add(f"  {dist['teacher']}")
        add(f"{'size':6s} {'tinymobilebert':>24s} {'pytorch':>24s} {'ours/torch':>11s} {'memory ours/torch':>18s}")
        for size, st in dist.items():
            if size == "teacher":
                continue
            r = rat.get("distill", {}).get(size, {})
            mem = [st.get(i, {}).get("peak_rss_mb") for i in ("tinymobilebert", "pytorch")]
            add(f"{size:6s} {_time_cell(st.get('tinymobilebert')):>24s} {_time_cell(st.get('pytorch')):>24s} "
                f"{_f(r.get('ours_vs_torch'), '{:.2f}x'):>11s} "
                f"{_f(mem[0], '{:.0f}')} / {_f(mem[1], '{:.0f}')} = {_f(r.get('peak_rss_vs_torch'), '{:.2f}x'):>6s}")
    ker = res.get("kernels")
    if ker:
        add("")
        if "error" in ker:
            add(f"Kernels: {ker['error']}")
        else:
            add(f"Kernels at the shapes of '{ker['size']}': median ms, Numba vs its NumPy twin "
                "(* = not called by this model's training step, inference or distillation losses; "
                "BLAS = not a Numba kernel, no 2x target)")
            add(f"{'kernel':28s} {'pass':6s} {'shape':40s} {'numba':>9s} {'twin':>9s} {'speedup':>9s}")
            for row in ker["rows"]:
                if not row.get("numba_kernel", True):
                    mark = "  BLAS"
                elif row["used_by_model"]:
                    mark = _mark(row["speedup"] >= TARGET_KERNEL_SPEEDUP)
                else:
                    mark = "  *"
                add(f"{row['kernel']:28s} {row['pass']:6s} {row['shape']:40s} {row['numba']['median'] * 1e3:9.3f} "
                    f"{row['numpy']['median'] * 1e3:9.3f} {row['speedup']:8.1f}x{mark}")
            if ker["no_recipe"]:
                add("registered kernels without a benchmark recipe: " + ", ".join(ker["no_recipe"]))
    jit = res.get("jit")
    if jit:
        add("")
        add(f"JIT (import + first '{jit['size']}' training step; own process per row, NUMBA_CACHE_DIR = a fresh temp dir)")
        for kind in ("cold", "warm"):
            j = jit[kind]
            if "error" in j:
                add(f"{kind:5s} {j['error']}")
                continue
            add(f"{kind:5s} import {j['import_s']:.2f} s + first step {j['first_step_s']:.2f} s = "
                f"{j['import_s'] + j['first_step_s']:.2f} s (process wall {j['wall_s']:.2f} s); compiled signatures "
                f"after import {j['signatures_after_import']} of {j['dispatchers']} dispatchers, after the step "
                f"{j['signatures_after_step']}" + (_mark(j['import_s'] + j['first_step_s'] <= TARGET_WARM_FIRST_STEP_S)
                                                   if kind == "warm" else ""))
    lines.extend(format_token_dropping(res))
    if res.get("contention"):
        from .contention import format_contention

        add("")
        lines.extend(format_contention(res["contention"], rat.get("contention", {})))
    lines.extend(format_dynabert(res))
    errors = [f"{size} {k}: {e['error']}" for size, st in res["steps"].items() for k, e in st.items()
              if isinstance(e, dict) and "error" in e]
    if "error" in res.get("matmul_peak", {}):
        errors.append("matmul peak: " + res["matmul_peak"]["error"])
    if errors:
        add("")
        add("Errors:")
        lines.extend("  " + e for e in errors)
    add("")
    t = res["targets"]
    add(f"Targets (information, not assertions): {sum(x['pass'] is True for x in t)} pass, "
        f"{sum(x['pass'] is False for x in t)} miss, {sum(x['pass'] is None for x in t)} not measured")
    for x in t:
        add(f"  {({True: 'pass', False: 'MISS', None: '----'})[x['pass']]} {x['target']}: {_f(x['value'], '{:.3g}')}")
    return "\n".join(lines)
