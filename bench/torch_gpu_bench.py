#!/usr/bin/env python3
"""One training step of GPT-2 small in PyTorch on one GPU: the counterpart of bench/gpu_step_bench.cpp.

The model is examples/gpt.pf written with torch.nn: pre-LayerNorm blocks, attention as matmul + masked softmax
(no fused kernel, as Pipeforge computes it; --sdpa uses F.scaled_dot_product_attention instead), GELU (tanh), learned
positions, the output projection tied to the token embedding. B=8, T=1024, L=12, C=768, H=12, V=50257.

The step: forward, cross-entropy, backward, the global gradient norm (Pipeforge computes it every step) and AdamW
(lr 1e-4, no weight decay). "f32" runs with TF32 matmuls allowed; "bf16" runs the forward under
torch.autocast(bfloat16), PyTorch's mixed precision: f32 weights and optimizer, bf16 matmuls (autocast keeps
softmax, layernorm and the loss in f32, where Pipeforge's bf16 stage runs every op in bf16).

Prints one markdown table with the columns of gpu_step_bench: median ms per step, tokens/s, model TFLOP/s
(6 * parameters * tokens + 12 * L * T * C * tokens), the cuBLAS GEMM peak measured in this run with an 8192^3
matmul in the same precision, and the model FLOP utilisation. Without a GPU it prints "no CUDA device" and exits 0.

    python3 bench/torch_gpu_bench.py [--steps 10] [--sdpa]
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, T, L, C, H, V = 8, 1024, 12, 768, 12, 50257


class Attention(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.sdpa = sdpa
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.register_buffer("causal", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
            scores = scores.masked_fill(~self.causal, float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = Attention(sdpa)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(sdpa) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        # The initializers of examples/gpt.pf: normal(0.02) matrices and embedding, normal(0.01) positions, zero
        # biases, unit norm gains.
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=0.01 if name == "wpe.weight" else 0.02)

    def forward(self, tokens, targets):
        x = self.wte(tokens) + self.wpe.weight[:T]
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied, as %logits = matmul %xf, %wte transpose_b=true
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


def gemm_peak(dtype):
    """The best rate of a few 8192^3 matmuls in `dtype` (f32 with TF32 allowed)."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    best = float("inf")
    for rep in range(8):
        torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        if rep > 0:  # the first run loads the kernel
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def time_steps(precision, peak, steps, sdpa):
    torch.manual_seed(0)
    model = Gpt(sdpa).cuda()
    params = sum(p.numel() for p in model.parameters())  # the tied embedding once
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    tokens = torch.randint(0, V, (B, T), device="cuda")
    targets = torch.randint(0, V, (B, T), device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))  # the norm only, as Pipeforge
        optimizer.step()
        return loss.item()  # waits for the device, as Pipeline::train_step does

    first = step()
    step()
    times = []
    last = first
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        last = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens_per_step = B * T
    flops = 6.0 * params * tokens_per_step + 12.0 * L * T * C * tokens_per_step
    del model, optimizer
    torch.cuda.empty_cache()
    return {
        "precision": "bf16 (autocast, f32 master weights)" if precision == "bf16" else "f32 (TF32 matmuls)",
        "ms": seconds * 1e3,
        "tokens_per_s": tokens_per_step / seconds,
        "flops_per_s": flops / seconds,
        "peak": peak,
        "first": first,
        "last": last,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after two warm-up steps)")
    parser.add_argument("--sdpa", action="store_true", help="fused attention (F.scaled_dot_product_attention)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    bf16_peak = gemm_peak(torch.bfloat16)
    tf32_peak = gemm_peak(torch.float32)
    rows = [time_steps("f32", tf32_peak, args.steps, args.sdpa), time_steps("bf16", bf16_peak, args.steps, args.sdpa)]
    attention = "fused attention (SDPA)" if args.sdpa else "attention as matmul + masked softmax"
    print(f"PyTorch {torch.__version__}, GPT-2 small (124M parameters), B=8, T=1024, {attention}, one training step "
          f"(AdamW) on {torch.cuda.get_device_name(0)}; 8192^3 matmul peaks measured in this run: "
          f"bf16 {bf16_peak / 1e12:.1f} TFLOP/s, TF32 {tf32_peak / 1e12:.1f} TFLOP/s\n")
    print("| precision | median ms/step | tokens/s | model TFLOP/s | GEMM peak (TFLOP/s) | MFU | loss first -> last |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['ms']:.1f} | {r['tokens_per_s']:.0f} | {r['flops_per_s'] / 1e12:.1f} | "
              f"{r['peak'] / 1e12:.1f} | {100 * r['flops_per_s'] / r['peak']:.1f}% | "
              f"{r['first']:.4f} -> {r['last']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
