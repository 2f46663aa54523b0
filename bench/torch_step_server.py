#!/usr/bin/python3
"""PyTorch's side of bench/lockstep.py: the reference training step, one step per request.

    /usr/bin/python3 bench/torch_step_server.py TORCH_BENCH --model mlp|gpt|llama|moe --threads 1 \
        [--openblas-threads 2] [--bf16]

TORCH_BENCH is the reference script (../shared/bench/torch_bench.py); the models, the batch and the
step (zero_grad, forward, cross-entropy, backward, SGD at lr 1e-3) are built from its module (the
Llama-style decoder from bench/torch_llama.py and the Mixtral-style one from bench/torch_moe.py, at the
GPT's sizes), so that both benchmarks time the
same thing. After --warmup steps the server prints "ready", then runs one step
per line read from stdin and answers "<seconds> <loss>". With --profile, torch.profiler records the
served steps and at the end stderr gets one line per op and input shapes ("<ms per step> <op> <shapes>").
With --bf16, the forward runs under torch.autocast("cpu", dtype=torch.bfloat16): the products (and what
autocast lists with them) in bf16, as a Pipeforge plan compiled with --dtype bf16 runs its CPU products.
"""
import argparse
import importlib.util
import pathlib
import sys
import time


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # also puts the script's folder (models.py) on sys.path
    return module


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torch_bench")
    ap.add_argument("--model", choices=["mlp", "gpt", "llama", "moe"], required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--openblas-threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="per-op milliseconds per served step on stderr")
    ap.add_argument("--bf16", action="store_true", help="the forward under CPU autocast to bfloat16")
    a = ap.parse_args()

    ref = load_reference(a.torch_bench)
    torch, F = ref.torch, ref.F
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    blas = ref.openblas()
    if blas:
        blas.openblas_set_num_threads(a.openblas_threads or a.threads)

    if a.model == "mlp":
        model = ref.make_mlp()
        x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
        loss_fn = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    elif a.model == "llama":
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
        import torch_llama  # noqa: E402  (bench/, put on the path just above)
        vocab, seq = 8192, 128
        model = torch_llama.Llama(n_layer=4, dim=512, n_head=8, hidden=1536, seq=seq, vocab=vocab)
        idx, tgt = torch.randint(0, vocab, (8, seq)), torch.randint(0, vocab, (8, seq))
        loss_fn = lambda: F.cross_entropy(model(idx).view(-1, vocab), tgt.view(-1))  # noqa: E731
    elif a.model == "moe":
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
        import torch_moe  # noqa: E402  (bench/, put on the path just above)
        vocab, seq = 8192, 128
        model = torch_moe.Mixtral(n_layer=4, dim=512, n_head=8, hidden=768, seq=seq, vocab=vocab, experts=8, top_k=2)
        idx, tgt = torch.randint(0, vocab, (8, seq)), torch.randint(0, vocab, (8, seq))

        def loss_fn():
            logits, balance = model(idx)
            return F.cross_entropy(logits.view(-1, vocab), tgt.view(-1)) + 0.01 * balance
    else:
        vocab, seq = 8192, 128
        model = ref.GPT(n_layer=4, n_embd=512, n_head=8, seq=seq, vocab=vocab, tied=True)
        idx, tgt = torch.randint(0, vocab, (8, seq)), torch.randint(0, vocab, (8, seq))
        loss_fn = lambda: F.cross_entropy(model(idx).view(-1, vocab), tgt.view(-1))  # noqa: E731
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        if a.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn()
        else:
            loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    profiler = None
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        profiler.__enter__()
    print("ready", flush=True)
    steps = 0
    for _ in sys.stdin:
        start = time.perf_counter()
        loss = step()
        steps += 1
        print(f"{time.perf_counter() - start:.6f} {loss:.6f}", flush=True)
    if profiler and steps:
        profiler.__exit__(None, None, None)
        events = profiler.key_averages(group_by_input_shape=True)
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
            if e.self_cpu_time_total / steps >= 100:  # microseconds
                sys.stderr.write(f"{e.self_cpu_time_total / steps / 1e3:8.2f}  {e.key} {e.input_shapes}\n")


if __name__ == "__main__":
    main()
