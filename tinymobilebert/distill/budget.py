"""Equal training budgets for a distilled student and a student trained alone, on any machine.

A distillation step costs more than a plain MLM step (the teacher's forward pass comes with
it), so "the same budget" must mean the same compute, not the same step count. Wall-clock time
is what a user waits, but on a machine shared with other programs it measures their load as much
as ours, and on a faster machine it buys more steps, so the results would depend on where they
ran. So the budget is a **step count of the student trained alone**, and the distilled student
gets the same **process CPU seconds** (``time.process_time``: the CPU time this process's threads
used, which other programs do not inflate):

1. each kind of step (the MLM-only student's, a step of each of PKT's stages, the PD step,
   JKT's and AKT's) runs a few times on real batches, after one warm-up step (JIT compilation),
   and its CPU seconds per step are measured. PKT's stages are measured one by one because they
   cost differently: stage l runs the student's layers 0 .. l and the teacher's up to the one
   paired with l (``steps``), so the last stage costs about a whole-model step and the first
   much less;
2. a budget of N steps is ``N x`` the MLM-only step's CPU seconds;
3. each method gets ``budget_cpu / cpu_per_step`` steps. A PKT or JKT run splits its share:
   ``layerwise_share`` of it in the layer-wise stages, S steps per layer (PKT's S steps in every
   stage cost S times the *sum* of the stages' step costs; JKT's L S steps, L S times its
   step's), the rest in PD.

Only the ratio of step costs is measured, so the step counts hardly depend on the machine or its
load; both students then use the same CPU seconds. The step counts, the measured step costs and
the CPU seconds each run really used are reported with the results.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


from ..model import MobileBertForPreTraining
from ..optim import AdamW, LinearWarmupDecay
from ..train.trainer import default_step
from .mapping import distillation_plan
from .schedules import TransferSchedule
from .steps import DistillationStep
from .teacher import copy_from_teacher


@dataclass
class Budget:
    """Step counts giving two methods the same CPU seconds (see the module notes)."""

    student_steps: int  # the budget: this many steps of the student trained alone
    cpu_per_wall: float  # CPU seconds this process got per wall second while measuring
    cpu_seconds: float  # the budget each method gets, in process CPU seconds
    mlm_step_cpu: float  # CPU seconds per step of the student trained alone
    layerwise_step_cpu: float  # ... of a PKT step, the mean over its stages (pkt_stage_cpu)
    pd_step_cpu: float  # ... of the PD stage
    mlm_steps: int
    steps_per_layer: int  # in each PKT stage
    pd_steps: int
    # CPU seconds per step of each PKT stage (stage l runs layers 0 .. l); None in a budget.json
    # written before the stages were measured one by one (every stage then cost layerwise_step_cpu)
    pkt_stage_cpu: list | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _cpu_per_step(step, batches, warmup=1) -> tuple[float, float, float]:
    """(CPU seconds per step, CPU seconds, wall seconds) over ``batches`` after ``warmup`` of them."""
    for b in batches[:warmup]:
        step(b)
    c0, w0 = time.process_time(), time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return cpu / max(len(batches) - warmup, 1), cpu, wall


def step_costs(teacher, student_config, batches, *, mlm_lr=4e-3, seed=0) -> dict:
    """CPU seconds per step of each kind, measured on ``batches`` (the first is a warm-up).

    Returns {"mlm": the student alone, "pkt_stages": [a step of PKT's stage l (FMT, AT,
    mean/variance of layer l, layers 0 .. l run) for each l], "layerwise": their mean, "jkt": a
    JKT step (of every layer), "pd": a PD step, "akt": a PD step with every layer's terms,
    "cpu_per_wall": the CPU seconds this process got per wall second while measuring}.
    """
    from .run import lamb_for  # run.py builds on this module's callers: imported here, one way

    L = student_config.num_hidden_layers
    alone = MobileBertForPreTraining(student_config, seed=seed)
    opt = AdamW(alone.store, lr=mlm_lr, schedule=LinearWarmupDecay(1, 10**6), max_grad_norm=1.0)

    def mlm_step(b):
        alone.zero_grad()
        default_step(alone, {**b, "mlm_positions": "labelled"})
        opt.step()

    student = MobileBertForPreTraining(student_config, seed=seed)
    copy_from_teacher(student, teacher)
    plan = distillation_plan(student_config, teacher.config, "uniform", ("fmt", "at", "mv", "mlm"))
    S = 1000

    def distill_step(strategy, step):
        sched = TransferSchedule(strategy, L, S if strategy in ("pkt", "jkt") else 0, S)
        lamb = lamb_for(student.store, sched)
        step_fn = DistillationStep(teacher, sched, plan, lamb)

        def run(b):
            lamb.step_count = step
            student.zero_grad()
            step_fn(student, b)
            lamb.step()
        return run

    measured = {"mlm": _cpu_per_step(mlm_step, batches),
                **{f"pkt_{l}": _cpu_per_step(distill_step("pkt", l * S + S // 2), batches) for l in range(L)},
                "pd": _cpu_per_step(distill_step("pkt", L * S + 5), batches),
                "jkt": _cpu_per_step(distill_step("jkt", 5), batches),
                "akt": _cpu_per_step(distill_step("akt", 5), batches)}
    out = {k: v[0] for k, v in measured.items() if not k.startswith("pkt_")}
    out["pkt_stages"] = [measured[f"pkt_{l}"][0] for l in range(L)]
    out["layerwise"] = sum(out["pkt_stages"]) / L
    out["cpu_per_wall"] = sum(v[1] for v in measured.values()) / max(sum(v[2] for v in measured.values()), 1e-9)
    return out


def split_budget(costs: dict, cpu_seconds: float, num_layers: int, layerwise_share: float = 0.3) -> dict:
    """Step counts spending ``cpu_seconds`` for each method, from ``step_costs``.

    Returns {"mlm_steps", "pd_only_steps", "akt_steps", "steps_per_layer", "pd_steps",
    "jkt_steps_per_layer", "jkt_pd_steps"}: the student alone, PD alone, AKT, and a PKT (JKT)
    run's stages (``layerwise_share`` of the budget in the layer-wise stages, the rest in PD).
    S steps per layer cost S x sum(costs["pkt_stages"]) in PKT (one stage per layer, each its own
    cost), S x L x costs["jkt"] in JKT (one stage of L S steps).
    """
    if not 0 < layerwise_share < 1:
        raise ValueError(f"layerwise_share must be in (0, 1), got {layerwise_share}")
    if "pkt_stages" in costs and len(costs["pkt_stages"]) != num_layers:
        raise ValueError(f"costs['pkt_stages'] must hold one cost per layer ({num_layers}), got "
                         f"{len(costs['pkt_stages'])}")
    out = {"mlm_steps": max(1, int(cpu_seconds / costs["mlm"])), "pd_only_steps": max(1, int(cpu_seconds / costs["pd"])),
           "akt_steps": max(1, int(cpu_seconds / costs["akt"]))}
    per_layer_step = {"": sum(costs["pkt_stages"]) if "pkt_stages" in costs else None,  # one step in every stage
                      "jkt_": num_layers * costs["jkt"] if "jkt" in costs else None}  # L steps of JKT's stage
    for prefix, cost in per_layer_step.items():
        if cost is None:
            continue
        spl = max(2, int(layerwise_share * cpu_seconds / cost))
        out[prefix + "steps_per_layer"] = spl
        out[prefix + "pd_steps"] = max(1, int((cpu_seconds - spl * cost) / costs["pd"]))
    return out


def measure_budget(teacher, student_config, batches, student_steps: int, *, layerwise_share: float = 0.3,
                   mlm_lr=4e-3, seed=0) -> Budget:
    """Measure the kinds of step on ``batches`` and give both students the CPU seconds of
    ``student_steps`` steps of the student trained alone (see the module notes).

    Parameters
    ----------
    teacher : the loaded teacher (MobileBertForPreTraining)
    student_config : the student's MobileBertConfig (both students)
    batches : list of pretraining batch dicts (a few; the first is the warm-up)
    student_steps : the budget, in steps of the student trained alone
    layerwise_share : the share of the distillation budget spent in PKT's stages (the rest is PD)
    """
    if isinstance(student_steps, bool) or not isinstance(student_steps, int) or student_steps < 1:
        raise ValueError(f"student_steps (the budget) must be a whole number >= 1, got {student_steps!r}")
    costs = step_costs(teacher, student_config, batches, mlm_lr=mlm_lr, seed=seed)
    cpu = student_steps * costs["mlm"]
    n = split_budget(costs, cpu, student_config.num_hidden_layers, layerwise_share)
    return Budget(student_steps, costs["cpu_per_wall"], cpu, costs["mlm"], costs["layerwise"], costs["pd"],
                  student_steps, n["steps_per_layer"], n["pd_steps"], costs["pkt_stages"])


def first_batches(data, batch_size: int, n: int = 4) -> list:
    """The first ``n`` training batches of epoch 0 (for measuring step costs)."""
    out = []
    for b in data.batches(batch_size, 0):
        out.append(b)
        if len(out) == n:
            break
    if not out:
        raise ValueError("no training batch to measure step costs on")
    return out


def cpu_seconds(fn, *args, **kwargs):
    """(fn(*args, **kwargs), the process CPU seconds it took)."""
    c0 = time.process_time()
    result = fn(*args, **kwargs)
    return result, time.process_time() - c0

