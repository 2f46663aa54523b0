"""PyTorch reference values for examples/mlp.pf, gpt.pf, llama.pf and moe.pf.

Run with /usr/bin/python3: it needs Debian's python3-torch (1.13) and
python3-numpy, and the first python3 on PATH may be another interpreter
without them.

For a named case this script builds, in PyTorch, exactly the model of the
example file (one torch statement per IR op, in Pipeforge's layouts: a matmul
weight is [in, out]), initialises it deterministically, makes one batch, and
writes into an output directory:

    W.safetensors         every parameter, f32, under its Pipeforge name
                          (the names after inlining: "h.0.attn.c_attn.w")
    D.safetensors         the graph inputs by argument name (mlp: x f32[B,I],
                          labels i32[B]; gpt: tokens, targets i32[B,T])
    expected.safetensors  the gradient of the loss with respect to every
                          parameter, f64, under the parameter names (the same
                          names `pipeforge run --save-grads` writes), and in
                          "__metadata__" the loss (repr of a float64), the case,
                          the model file, the bound dimensions and the format
                          version

The expected values are computed in float64 from the float32-rounded weights
and inputs, so they are the exact answer for the files Pipeforge reads, up to
float64 rounding.

Initialisation is chosen so that every gradient is exercised: biases and
layernorm weights are random, not zeros and ones; attention weights are large
enough that the softmax is far from uniform (with GPT-2's normal(0.02) the
scores are nearly zero and a wrong score scale would barely show in the
gradients); one token is repeated so the embedding gradient must accumulate.

Usage:
    /usr/bin/python3 tests/reference/torch_reference.py CASE OUT_DIR
    /usr/bin/python3 tests/reference/torch_reference.py --list
"""

import argparse
import dataclasses
import math
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402  (found through the path set just above)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Bumped whenever the meaning of the files changes (names, layouts, what the
# metadata holds), so a stale fixture is recognised as such.
FORMAT = "pipeforge-torch-reference/1"

# A ReLU whose input lies closer to zero than this could switch sides between
# Pipeforge's float32 forward and this float64 one and change a gradient by a
# whole unit's contribution; generation refuses such a batch.
RELU_MARGIN = 1e-4

# Every expected gradient must be larger than this somewhere, or the test
# would not exercise it.
MIN_GRADIENT = 1e-6


@dataclasses.dataclass(frozen=True)
class Case:
    """One model file bound to small dimensions, with its torch twin."""

    name: str
    model: str  # path of the .pf file, relative to the repository root
    dims: dict  # every `dim` of the model file -> the value bound here
    seed: int
    make_parameters: callable  # (dims, generator) -> {name: f32 tensor}
    make_batch: callable  # (dims, generator) -> {argument: tensor}
    loss: callable  # (parameters f64, batch, dims, relu_inputs=None) -> scalar tensor

    def bind_text(self, include_batch=True):
        """The dimensions as `pipeforge --bind` spells them: "B=8,I=32,..."."""
        return ",".join(f"{k}={v}" for k, v in self.dims.items() if include_batch or k != "B")

    def pipeforge_args(self, pipeforge, out_dir):
        """The command that runs one step of this case in Pipeforge.

        SGD with a zero learning rate and one step: the gradients saved are
        those of the weights in W.safetensors. The batch size is given by
        --batch, the other dimensions by --bind.
        """
        out_dir = pathlib.Path(out_dir)
        return [
            str(pipeforge), "run", str(REPO_ROOT / self.model),
            "--steps", "1",
            "--batch", str(self.dims["B"]),
            "--bind", self.bind_text(include_batch=False),
            "--optimizer", "sgd", "--lr", "0",
            # The gradients as computed: the command line clips by default.
            "--clip", "0",
            "--init-from", str(out_dir / "W.safetensors"),
            "--data", str(out_dir / "D.safetensors"),
            "--save-grads", str(out_dir / "G.safetensors"),
            "--threads", "1",
        ]  # yapf: disable


# ---------------------------------------------------------------- helpers


def _normal(gen, shape, std, mean=0.0):
    """Deterministic float32 normal(mean, std) of `shape` from `gen`."""
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean


def _layernorm_params(gen, c):
    """A layernorm weight near 1 and a bias near 0, both random."""
    return _normal(gen, (c,), 0.1, mean=1.0), _normal(gen, (c,), 0.1)


# ---------------------------------------------------------------- mlp


def mlp_parameters(d, gen):
    """The parameters of examples/mlp.pf in declaration order, [in, out].

    Kaiming-scale weights as the model file asks (std sqrt(2 / fan_in), xavier
    for the output layer), but random biases where the file says zeros.
    """
    I, H, K, L = d["I"], d["H"], d["K"], d["L"]
    p = {"fc_in.w": _normal(gen, (I, H), math.sqrt(2 / I)), "fc_in.b": _normal(gen, (H,), 0.1)}
    for i in range(L):
        p[f"fc.{i}.w"] = _normal(gen, (H, H), math.sqrt(2 / H))
        p[f"fc.{i}.b"] = _normal(gen, (H,), 0.1)
    p["fc_out.w"] = _normal(gen, (H, K), math.sqrt(2 / (H + K)))
    p["fc_out.b"] = _normal(gen, (K,), 0.1)
    return p


def mlp_batch(d, gen):
    """x f32[B,I] normal(0, 1), labels i32[B] uniform in [0, K)."""
    B = d["B"]
    return {
        "x": _normal(gen, (B, d["I"]), 1.0),
        "labels": torch.randint(0, d["K"], (B,), generator=gen, dtype=torch.int32),
    }


def mlp_loss(p, batch, d, relu_inputs=None):
    """examples/mlp.pf, op by op. relu_inputs, if a list, collects every
    tensor fed to a relu (for the margin check)."""

    def relu(z):
        if relu_inputs is not None:
            relu_inputs.append(z.detach())
        return F.relu(z)

    h = relu(batch["x"] @ p["fc_in.w"] + p["fc_in.b"])  # (B, H)
    for i in range(d["L"]):  # call @hidden scope="fc" repeat=L
        h = relu(h @ p[f"fc.{i}.w"] + p[f"fc.{i}.b"])  # (B, H)
    logits = h @ p["fc_out.w"] + p["fc_out.b"]  # (B, K)
    return F.cross_entropy(logits, batch["labels"].long())  # mean over B


# ---------------------------------------------------------------- gpt


def gpt_parameters(d, gen):
    """The parameters of examples/gpt.pf after inlining, in declaration
    order, [in, out]. Scales: see the module docstring."""
    V, S, C, L = d["V"], d["S"], d["C"], d["L"]
    p = {"wte": _normal(gen, (V, C), 0.1), "wpe": _normal(gen, (S, C), 0.1)}
    for i in range(L):
        h = f"h.{i}."
        p[h + "ln_1.w"], p[h + "ln_1.b"] = _layernorm_params(gen, C)
        p[h + "attn.c_attn.w"] = _normal(gen, (C, 3 * C), 1 / math.sqrt(C))
        p[h + "attn.c_attn.b"] = _normal(gen, (3 * C,), 0.1)
        p[h + "attn.c_proj.w"] = _normal(gen, (C, C), 1 / math.sqrt(C))
        p[h + "attn.c_proj.b"] = _normal(gen, (C,), 0.1)
        p[h + "ln_2.w"], p[h + "ln_2.b"] = _layernorm_params(gen, C)
        p[h + "mlp.c_fc.w"] = _normal(gen, (C, 4 * C), 1 / math.sqrt(C))
        p[h + "mlp.c_fc.b"] = _normal(gen, (4 * C,), 0.1)
        p[h + "mlp.c_proj.w"] = _normal(gen, (4 * C, C), 1 / math.sqrt(4 * C))
        p[h + "mlp.c_proj.b"] = _normal(gen, (C,), 0.1)
    p["ln_f.w"], p["ln_f.b"] = _layernorm_params(gen, C)
    return p


def gpt_batch(d, gen):
    """tokens and targets i32[B,T], uniform in [0, V); one token repeats."""
    B, T, V = d["B"], d["T"], d["V"]
    tokens = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int32)
    # Two positions share a token, so that wte's embedding gradient has to
    # add two contributions into one row (a scatter that overwrites fails).
    tokens[B - 1, T - 1] = tokens[0, 0]
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int32)
    return {"tokens": tokens, "targets": targets}


def _layernorm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def _block(x, p, h, n_head):
    """func @block of examples/gpt.pf with the parameters prefixed `h`."""
    B, T, C = x.shape
    hd = C // n_head
    a = _layernorm(x, p[h + "ln_1.w"], p[h + "ln_1.b"])  # (B, T, C)
    qkv = a @ p[h + "attn.c_attn.w"] + p[h + "attn.c_attn.b"]  # (B, T, 3C)
    q, k, v = qkv.split(C, dim=2)  # split axis=2 sizes=[C,C,C]
    q = q.reshape(B, T, n_head, hd).permute(0, 2, 1, 3)  # (B, H, T, C/H)
    k = k.reshape(B, T, n_head, hd).permute(0, 2, 1, 3)
    v = v.reshape(B, T, n_head, hd).permute(0, 2, 1, 3)
    scores_raw = q @ k.transpose(-2, -1)  # matmul transpose_b=true, (B, H, T, T)
    scale = torch.rsqrt(torch.tensor(float(hd), dtype=x.dtype))  # rsqrt(dim_value C/H)
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (i, j) true iff j <= i
    scores = torch.where(causal, scores_raw * scale, torch.tensor(-math.inf, dtype=x.dtype))
    probs = torch.softmax(scores, dim=-1)
    y = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
    x1 = x + (y @ p[h + "attn.c_proj.w"] + p[h + "attn.c_proj.b"])
    m = _layernorm(x1, p[h + "ln_2.w"], p[h + "ln_2.b"])
    act = F.gelu(m @ p[h + "mlp.c_fc.w"] + p[h + "mlp.c_fc.b"], approximate="tanh")  # (B, T, 4C)
    return x1 + (act @ p[h + "mlp.c_proj.w"] + p[h + "mlp.c_proj.b"])


def gpt_loss(p, batch, d, relu_inputs=None):
    """graph @gpt of examples/gpt.pf, op by op. It has no relu, so
    relu_inputs (the same argument as mlp_loss's) stays empty."""
    T = d["T"]
    tokens = batch["tokens"].long()
    x = F.embedding(tokens, p["wte"]) + p["wpe"][0:T]  # (B, T, C)
    for i in range(d["L"]):  # call @block scope="h" repeat=L
        x = _block(x, p, f"h.{i}.", d["H"])
    xf = _layernorm(x, p["ln_f.w"], p["ln_f.b"])
    logits = xf @ p["wte"].transpose(0, 1)  # tied head: matmul %xf, %wte transpose_b=true, (B, T, V)
    return F.cross_entropy(logits.reshape(-1, d["V"]), batch["targets"].long().reshape(-1))


# ---------------------------------------------------------------- llama


def llama_parameters(d, gen):
    """The parameters of examples/llama.pf after inlining, in declaration
    order, [in, out]. RMSNorm weights random near 1; attention weights large
    enough that the rotated scores matter (see the module docstring)."""
    V, C, F_, L = d["V"], d["C"], d["F"], d["L"]
    kv = d["H"] // d["R"] * (C // d["H"])  # the key and value heads' width
    p = {"tok_embeddings": _normal(gen, (V, C), 0.5)}
    for i in range(L):
        h = f"layers.{i}."
        p[h + "attention_norm.w"] = _normal(gen, (C,), 0.1, mean=1.0)
        p[h + "attention.wq"] = _normal(gen, (C, C), 1 / math.sqrt(C))
        p[h + "attention.wk"] = _normal(gen, (C, kv), 1 / math.sqrt(C))
        p[h + "attention.wv"] = _normal(gen, (C, kv), 1 / math.sqrt(C))
        p[h + "attention.wo"] = _normal(gen, (C, C), 1 / math.sqrt(C))
        p[h + "ffn_norm.w"] = _normal(gen, (C,), 0.1, mean=1.0)
        p[h + "feed_forward.w1"] = _normal(gen, (C, F_), 1 / math.sqrt(C))
        p[h + "feed_forward.w3"] = _normal(gen, (C, F_), 1 / math.sqrt(C))
        p[h + "feed_forward.w2"] = _normal(gen, (F_, C), 1 / math.sqrt(F_))
    p["norm.w"] = _normal(gen, (C,), 0.1, mean=1.0)
    p["output"] = _normal(gen, (C, V), 1 / math.sqrt(C))
    return p


def _rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + 1e-5) * w


def _rotary(x, theta=10000.0):
    """Hugging Face Llama's apply_rotary_pos_emb on x (B, H, T, D): the
    halves rotated ("rotate_half") by position t times theta^(-2i/D)."""
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (theta**(torch.arange(0, D, 2, dtype=torch.float64) / D))  # (D/2,)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, D/2)
    emb = torch.cat([angles, angles], dim=-1).to(x.dtype)  # (T, D)
    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], dim=-1)
    return x * emb.cos() + rotated * emb.sin()


def _repeat_kv(x, n_rep):
    """Hugging Face Llama's repeat_kv: each of x's key or value heads (B, G, T, D)
    copied to the n_rep query heads that share it, (B, G * n_rep, T, D)."""
    B, G, T, D = x.shape
    return x[:, :, None, :, :].expand(B, G, n_rep, T, D).reshape(B, G * n_rep, T, D)


def _llama_block(x, p, h, n_head, n_kv_head, mlp=None):
    """func @block of examples/llama.pf with the parameters prefixed `h`; `mlp`
    (m, p, h) -> the MLP's output, SwiGLU by default."""
    mlp = mlp or _swiglu
    B, T, C = x.shape
    hd = C // n_head
    a = _rmsnorm(x, p[h + "attention_norm.w"])
    q = (a @ p[h + "attention.wq"]).reshape(B, T, n_head, hd).permute(0, 2, 1, 3)
    k, v = ((a @ p[h + "attention." + w]).reshape(B, T, n_kv_head, hd).permute(0, 2, 1, 3) for w in ("wk", "wv"))
    q, k = _rotary(q), _rotary(k)
    k, v = _repeat_kv(k, n_head // n_kv_head), _repeat_kv(v, n_head // n_kv_head)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = torch.where(causal, scores, torch.tensor(-math.inf, dtype=x.dtype))
    y = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3).reshape(B, T, C)
    x1 = x + y @ p[h + "attention.wo"]
    return x1 + mlp(_rmsnorm(x1, p[h + "ffn_norm.w"]), p, h)


def _swiglu(m, p, h):
    return (F.silu(m @ p[h + "feed_forward.w1"]) * (m @ p[h + "feed_forward.w3"])) @ p[h + "feed_forward.w2"]


def llama_loss(p, batch, d, relu_inputs=None, mlp=None):
    """graph @llama of examples/llama.pf. No relu: relu_inputs stays empty."""
    x = F.embedding(batch["tokens"].long(), p["tok_embeddings"])  # (B, T, C)
    for i in range(d["L"]):  # call @block scope="layers" repeat=L
        x = _llama_block(x, p, f"layers.{i}.", d["H"], d["H"] // d["R"], mlp)
    logits = _rmsnorm(x, p["norm.w"]) @ p["output"]  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, d["V"]), batch["targets"].long().reshape(-1))


# ---------------------------------------------------------------- moe


def moe_parameters(d, gen):
    """The parameters of examples/moe.pf: llama's, with a router and E experts
    stacked ([E, in, out]) in place of the MLP. The router's weights are
    large enough that the gates are far from equal."""
    p = llama_parameters(d, gen)
    C, F_, E = d["C"], d["F"], d["E"]
    for i in range(d["L"]):
        h = f"layers.{i}."
        for w in ("w1", "w3", "w2"):
            del p[h + "feed_forward." + w]
        p[h + "router.w"] = _normal(gen, (C, E), 2 / math.sqrt(C))
        p[h + "experts.w1"] = _normal(gen, (E, C, F_), 1 / math.sqrt(C))
        p[h + "experts.w3"] = _normal(gen, (E, C, F_), 1 / math.sqrt(C))
        p[h + "experts.w2"] = _normal(gen, (E, F_, C), 1 / math.sqrt(F_))
    return p


def _mixtral_moe(m, p, h, top_k, balance):
    """Hugging Face Mixtral's sparse MoE block (MixtralSparseMoeBlock): the
    router's softmax, each token's top_k of it renormalised, and each expert
    run on the tokens that chose it, its output added into their rows. Its
    load balancing loss (load_balancing_loss_func on this layer's logits:
    E times the sum over experts of the share of the tokens choosing each and
    its mean probability) is appended to `balance`."""
    B, T, C = m.shape
    tokens = m.reshape(-1, C)
    probs = torch.softmax(tokens @ p[h + "router.w"], dim=-1)  # (N, E)
    weights, chosen = torch.topk(probs, top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(tokens)
    for e in range(probs.shape[-1]):
        rows, slot = torch.where(chosen == e)
        x = tokens[rows]
        y = (F.silu(x @ p[h + "experts.w1"][e]) * (x @ p[h + "experts.w3"][e])) @ p[h + "experts.w2"][e]
        out = out.index_add(0, rows, y * weights[rows, slot, None])
    tokens_per_expert = F.one_hot(chosen, probs.shape[-1]).to(probs.dtype).mean(dim=0)  # (K, E)
    balance.append(torch.sum(tokens_per_expert * probs.mean(dim=0)[None, :]) * probs.shape[-1])
    return out.reshape(B, T, C)


def moe_loss(p, batch, d, relu_inputs=None):
    """graph @mixtral of examples/moe.pf: llama's with the MoE block, plus A/100
    times the layers' load balancing losses."""
    balance = []
    ce = llama_loss(p, batch, d, relu_inputs, mlp=lambda m, p, h: _mixtral_moe(m, p, h, d["K"], balance))
    return ce + d["A"] / 100 * sum(balance)


CASES = {
    c.name: c
    for c in [
        Case("mlp", "examples/mlp.pf", {"B": 8, "I": 32, "H": 64, "L": 2, "K": 10}, 1234,
             mlp_parameters, mlp_batch, mlp_loss),
        Case("gpt", "examples/gpt.pf", {"B": 2, "T": 16, "S": 16, "C": 64, "H": 4, "L": 2, "V": 256}, 5678,
             gpt_parameters, gpt_batch, gpt_loss),
        Case("llama", "examples/llama.pf", {"B": 2, "T": 16, "C": 64, "H": 4, "R": 2, "F": 96, "L": 2, "V": 256}, 4321,
             llama_parameters, gpt_batch, llama_loss),
        Case("moe", "examples/moe.pf",
             {"B": 2, "T": 16, "C": 32, "H": 4, "R": 2, "F": 48, "L": 2, "V": 256, "E": 4, "K": 2, "A": 30}, 8765,
             moe_parameters, gpt_batch, moe_loss),
    ]
}


# ---------------------------------------------------------------- fixture


def make_inputs(case):
    """The case's float32 parameters and its batch, both deterministic."""
    gen = torch.Generator().manual_seed(case.seed)
    return case.make_parameters(case.dims, gen), case.make_batch(case.dims, gen)


def to_float64(tensors):
    """Float tensors widened to float64 (exactly: every f32 is an f64);
    integer tensors unchanged."""
    return {k: (v.double() if v.is_floating_point() else v) for k, v in tensors.items()}


def reference(case, params32, batch):
    """The loss and every gradient in float64, from the float32 values.

    Returns (loss: float, grads: {name: float64 tensor}). Raises ValueError
    when the case would be a weak or flaky test (a ReLU input within
    RELU_MARGIN of zero, a gradient that is zero everywhere).
    """
    params = {k: v.double().requires_grad_(True) for k, v in params32.items()}
    batch64 = to_float64(batch)
    relu_inputs = []
    loss = case.loss(params, batch64, case.dims, relu_inputs=relu_inputs)
    closest = min((float(z.abs().min()) for z in relu_inputs), default=math.inf)
    if closest < RELU_MARGIN:
        raise ValueError(f"{case.name}: a relu input is {closest:.3g} from zero (< {RELU_MARGIN}); "
                         "float32 rounding could flip it: choose another seed")
    grads = torch.autograd.grad(loss, list(params.values()))
    grads = {name: g.detach() for name, g in zip(params, grads)}
    for name, g in grads.items():
        if float(g.abs().max()) <= MIN_GRADIENT:
            raise ValueError(f"{case.name}: the gradient of {name} is zero everywhere; the test would not exercise it")
    return float(loss), grads


def generate(case_name, out_dir):
    """Writes W, D and expected.safetensors for `case_name` into `out_dir`.

    Returns the float64 loss.
    """
    case = CASES[case_name]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params32, batch = make_inputs(case)
    loss, grads = reference(case, params32, batch)

    safetensors_io.save(out_dir / "W.safetensors", {k: v.numpy() for k, v in params32.items()})
    safetensors_io.save(out_dir / "D.safetensors", {k: v.numpy() for k, v in batch.items()})
    metadata = {
        "format": FORMAT,
        "case": case.name,
        "model": case.model,
        "bind": case.bind_text(),
        "loss": repr(loss),  # repr of a float round-trips exactly
        "torch": torch.__version__,
    }
    safetensors_io.save(out_dir / "expected.safetensors", {k: v.numpy().astype(np.float64) for k, v in grads.items()},
                        metadata)
    return loss


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", nargs="?", choices=sorted(CASES))
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--list", action="store_true", help="print the cases and their bound dimensions")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name}: {case.model} {case.bind_text()}")
        return 0
    if args.case is None or args.out_dir is None:
        parser.error("give CASE and OUT_DIR, or --list")
    loss = generate(args.case, args.out_dir)
    print(f"{args.case}: loss {loss!r}; wrote W, D and expected.safetensors to {args.out_dir}")
    print("run: " + " ".join(CASES[args.case].pipeforge_args("build/tools/pipeforge", args.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
