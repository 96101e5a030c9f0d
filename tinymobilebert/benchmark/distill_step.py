"""The distillation step, here and in PyTorch: teacher forward (no gradient) + student forward and
backward + feature-map and attention transfer on every layer + LAMB.

Dimensions: B batch, T tokens, H inter-block width, L layers.

Ours is the package's own ``distill.DistillationStep`` (a JKT step: every layer's FMT and AT
terms, weights 100/L and 1/L) with ``distill.lamb_for``'s LAMB. PyTorch's is the same
computation on transformers' MobileBERT modules: ``torch.no_grad()`` teacher pass, FMT as
``mse_loss`` of ``layer_norm(eps=1e-12)``'d states, AT as ``-sum p_t log p_s`` over the returned
attention probabilities (dropout off, no padding: no zero probability to take a log of), backward,
global-norm clipping at 1.0 and a LAMB written with torch's ``_foreach`` ops (no bias correction,
trust ratio ||w|| / ||update||, norms and biases excluded, as ``optim.LAMB`` here).

**The teacher.** transformers cannot run IB-BERT (Q and K read the raw 512-wide block input,
while its Q/K weights expect the 1024-wide bottleneck), so both sides run the closest layout it
can: IB-BERT's inverted bottleneck (intra-block width 2H, one FFN of 8H, LayerNorm, GELU) with
Q, K and V reading the 2H-wide bottleneck (``use_bottleneck_attention``). Its Q/K/V products are
2x IB-BERT's; everything else is the same.
"""

from __future__ import annotations

import gc

import numpy as np

from .measure import peak_rss_mb, rss_mb, size_config, time_calls

DISTILL_SIZES = ("tiny", "small")  # "micro" for smoke tests
TARGET_DISTILL_VS_TORCH = 0.6  # time, ours / PyTorch
TARGET_DISTILL_MEMORY_VS_TORCH = 0.7  # peak RSS, ours / PyTorch
TEACHER_NOTE = ("teacher: IB-BERT's inverted bottleneck (2H inside, one FFN of 8H, LayerNorm, GELU) with Q, K, V "
                "reading the 2H bottleneck (use_bottleneck_attention): transformers cannot run IB-BERT's raw-input "
                "Q/K, so both sides run this closest layout")


def configs(size: str):
    """(student config, teacher config, B, T): the size's MobileBERT and its teacher, dropout off."""
    student, B, T = size_config(size)
    H = student.hidden_size
    student = student.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = student.replace(intra_bottleneck_size=2 * H, intermediate_size=8 * H, num_feedforward_networks=1,
                              use_bottleneck_attention=True, key_query_shared_bottleneck=False,
                              normalization_type="layer_norm", hidden_act="gelu_new")
    return student, teacher, B, T


def _batch(cfg, B, T):
    ids = np.random.default_rng(0).integers(5, cfg.vocab_size, (B, T))
    return ids


def _ours(size):
    from ..distill import DistillationStep, LossWeights, TransferSchedule, distillation_plan, lamb_for
    from ..model import MobileBertForPreTraining

    scfg, tcfg, B, T = configs(size)
    ids = _batch(scfg, B, T)
    batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
             "labels": np.full_like(ids, -100)}
    teacher = MobileBertForPreTraining(tcfg, seed=1).eval()
    student = MobileBertForPreTraining(scfg, seed=0)
    L = scfg.num_hidden_layers
    sched = TransferSchedule("jkt", L, 10**6, 0)
    opt = lamb_for(student.store, sched)
    opt.step_count = 10  # inside the stage, past the warm-up's zero
    plan = distillation_plan(scfg, tcfg, "uniform", ("fmt", "at"))
    step_fn = DistillationStep(teacher, sched, plan, opt, LossWeights(100.0, 1.0, 0.0, 0.0))

    def step():
        student.zero_grad()
        loss = step_fn(student, batch)["loss"]
        opt.step()
        opt.step_count = 10
        return loss

    return (teacher, student), step


class TorchLAMB:
    """LAMB as ``optim.LAMB`` (MobileBERT's): no bias correction, decoupled decay 0.01 inside the
    update, trust ratio ||w|| / ||u|| (1 when either is 0, and for norms and biases), global-norm
    clipping at 1.0, written with torch's ``_foreach`` ops."""

    def __init__(self, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0):
        import torch

        self.torch = torch
        named = [(n, p) for n, p in named_params if p.requires_grad]
        self.params = [p for _, p in named]
        excluded = [("LayerNorm" in n or "bias" in n) for n, _ in named]
        self.adapt = torch.tensor([not e for e in excluded])
        self.decay = [0.0 if e else weight_decay for e in excluded]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr, self.b1, self.b2, self.eps, self.max_grad_norm = lr, betas[0], betas[1], eps, max_grad_norm

    def step(self):
        torch = self.torch
        with torch.no_grad():
            idx = [i for i, p in enumerate(self.params) if p.grad is not None]
            ps, gs = [self.params[i] for i in idx], [self.params[i].grad for i in idx]
            ms, vs = [self.m[i] for i in idx], [self.v[i] for i in idx]
            torch.nn.utils.clip_grad_norm_(ps, self.max_grad_norm, foreach=True)
            torch._foreach_mul_(ms, self.b1)
            torch._foreach_add_(ms, gs, alpha=1 - self.b1)
            torch._foreach_mul_(vs, self.b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
            us = torch._foreach_div(ms, torch._foreach_add(torch._foreach_sqrt(vs), self.eps))
            torch._foreach_add_(us, torch._foreach_mul(ps, [self.decay[i] for i in idx]))
            w = torch.stack(torch._foreach_norm(ps))
            u = torch.stack(torch._foreach_norm(us))
            ratio = torch.where((w > 0) & (u > 0) & self.adapt[idx], w / u, torch.ones_like(w))
            torch._foreach_mul_(us, list(torch.unbind(ratio * -self.lr)))
            torch._foreach_add_(ps, us)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def _torch(size):
    import torch
    import torch.nn.functional as F
    import transformers

    from .workers import hf_config

    scfg, tcfg, B, T = configs(size)
    ids = torch.from_numpy(_batch(scfg, B, T))
    torch.manual_seed(0)
    teacher = transformers.MobileBertForPreTraining(hf_config(tcfg)).eval()
    student = transformers.MobileBertForPreTraining(hf_config(scfg)).eval()  # eval: no dropout; gradients flow
    opt = TorchLAMB(student.named_parameters())
    L, H = scfg.num_hidden_layers, scfg.hidden_size

    def step():
        with torch.no_grad():
            t = teacher.mobilebert(input_ids=ids, output_hidden_states=True, output_attentions=True)
        s = student.mobilebert(input_ids=ids, output_hidden_states=True, output_attentions=True)
        loss = 0.0
        for l in range(L):
            hs = F.layer_norm(s.hidden_states[l + 1], (H,), eps=1e-12)
            ht = F.layer_norm(t.hidden_states[l + 1], (H,), eps=1e-12)
            loss = loss + (100.0 / L) * F.mse_loss(hs, ht)
            loss = loss + (1.0 / L) * -(t.attentions[l] * torch.log(s.attentions[l])).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    return (teacher, student), step


def worker_distill(spec) -> dict:
    """Time one implementation's distillation step at a size; memory as ``workers.worker_step``."""
    impl = spec["impl"]
    if impl == "pytorch":
        import torch

        torch.set_num_threads(spec["threads"])
    runner = _torch if impl == "pytorch" else _ours
    _, warm = runner("micro")  # one-time costs (compiled kernels, torch's lazy init) are not the step's memory
    warm()
    del warm
    gc.collect()
    rss_import = rss_mb()
    models, step = runner(spec["size"])
    gc.collect()
    rss_model = rss_mb()
    times = time_calls(step, spec["warmup"], spec["repeats"])
    check = float(step())
    peak = max(peak_rss_mb(), rss_mb())
    return {"time": times, "rss_warm_mb": rss_import, "rss_model_mb": rss_model, "peak_rss_mb": peak,
            "peak_over_model_mb": peak - rss_model, "check": check}
