"""Tests of the PyTorch reference itself, so that a failure of
check_against_torch.py points at Pipeforge and not at the reference.

Usage:
    /usr/bin/python3 tests/reference/self_test.py [PIPEFORGE]

Checks:
  safetensors   the writer gives, byte for byte, a file constructed by hand
                (the same file as Pipeforge's own safetensors_test.cpp);
                tensors of every dtype and odd shapes round-trip; the reader
                rejects truncation, gaps, overlaps and wrong sizes
  fd-CASE       the torch model's gradients match central finite differences
                in float64, on the largest entry and a few random entries of
                several parameters (each of q, k, v in the attention weights)
  numpy-CASE    a separate NumPy forward pass, reading only W.safetensors and
                D.safetensors, reproduces the expected loss: so the files hold
                what the model file means (names, [in, out] layouts, the
                q/k/v order of c_attn, the tied output projection)
  checker       check_against_torch.py passes a float32 stand-in for Pipeforge
                (stand_in_pipeforge.py), fails it for each planted defect, and
                skips with status 77 when torch cannot be imported
  names-CASE    (only with PIPEFORGE) W.safetensors and D.safetensors hold
                exactly the parameters and graph inputs, with the dtypes and
                shapes, that `pipeforge opt --passes=inline --bind ...` declares

Prints one line per check and "N passed, M failed"; exits 0, 1, or 77 when
torch or numpy is missing. Run it with /usr/bin/python3 (Debian's
python3-torch and python3-numpy; the first python3 on PATH may lack them).
"""

import ast
import math
import os
import pathlib
import re
import struct
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SKIPPED = 77

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(SKIPPED)

sys.path.insert(0, str(HERE))
import safetensors_io  # noqa: E402
import torch_reference  # noqa: E402


class CheckFailed(Exception):
    """A check's verdict, with the reason."""


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------- safetensors


def check_safetensors():
    # A file written out by hand from the format's definition: 138 bytes of
    # JSON padded with 6 spaces to 144 (0x90), metadata first, tensors sorted
    # by name, then f32 1.0 and 2.0 and i64 5, little-endian.
    header = (b'{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}')
    expect(len(header) == 138, f"the hand-made header is {len(header)} bytes, not 138")
    by_hand = (b"\x90\x00\x00\x00\x00\x00\x00\x00" + header + b" " * 6 + b"\x00\x00\x80\x3f\x00\x00\x00\x40" +
               b"\x05\x00\x00\x00\x00\x00\x00\x00")
    # Given out of name order, to show the writer sorts.
    written = safetensors_io.encode({"b": np.array(5, dtype=np.int64), "a": np.array([1, 2], dtype=np.float32)},
                                    {"format": "pt"})
    expect(written == by_hand, f"encode gives\n{written!r}\nnot the hand-made\n{by_hand!r}")
    tensors, metadata = safetensors_io.decode(by_hand)
    expect(metadata == {"format": "pt"}, f"metadata read back as {metadata}")
    expect(tensors["a"].dtype == np.float32 and tensors["a"].tolist() == [1.0, 2.0], f"a read back as {tensors['a']!r}")
    expect(tensors["b"].dtype == np.int64 and tensors["b"].shape == () and int(tensors["b"]) == 5,
           f"b read back as {tensors['b']!r}")

    rng = np.random.default_rng(0)
    originals = {
        "f64": rng.standard_normal((2, 3, 4)),
        "f32.scalar": np.array(3.5, dtype=np.float32),
        "i32": rng.integers(-9, 9, (5,)).astype(np.int32),
        "i64.transposed": rng.integers(0, 1 << 40, (3, 2)).T,  # not contiguous: the writer must copy
        "bool": rng.random((4,)) < 0.5,
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    data = safetensors_io.encode(originals)
    expect(struct.unpack_from("<Q", data)[0] % 8 == 0, "the header is not padded to a multiple of 8")
    back, metadata = safetensors_io.decode(data)
    expect(metadata == {}, f"unexpected metadata {metadata}")
    expect(sorted(back) == sorted(originals), f"names {sorted(back)} read back, not {sorted(originals)}")
    for name, value in originals.items():
        expect(back[name].dtype == value.dtype and back[name].shape == value.shape and np.array_equal(back[name], value),
               f"{name} did not round-trip")
    expect(safetensors_io.encode(back) == data, "writing what was read changed the bytes")
    # Metadata keys are written sorted, as Pipeforge keeps them (std::map).
    expect(safetensors_io.encode({}, {"z": "1", "a": "2"}) == safetensors_io.encode({}, {"a": "2", "z": "1"}),
           "metadata order leaks into the bytes")
    expect(safetensors_io.encode({}) == struct.pack("<Q", 8) + b"{}      ", "an empty file is not 8 + '{}      '")

    def with_header(text, body):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw + body

    f32x2 = b"\x00" * 8
    defects = {
        "too short": b"\x01\x00",
        "truncated header": struct.pack("<Q", 100) + b"{}",
        "not json": with_header("{oops", b""),
        "wrong size": with_header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', f32x2),
        "past the end": with_header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 5),
        "gap": with_header('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                           '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', b"\x00" * 12),
        "overlap": with_header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                               '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', b"\x00" * 12),
        "trailing bytes": with_header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 16),
        "unknown dtype": with_header('{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}', f32x2),
    }
    for what, raw in defects.items():
        try:
            safetensors_io.decode(raw)
        except ValueError:
            continue
        raise CheckFailed(f"a file with a defect ({what}) was accepted")
    return "hand-made file matches byte for byte; 6 dtypes/shapes round-trip; 9 defects rejected"


# ---------------------------------------------------------------- finite differences

# Parameters probed per case; for c_attn.w the largest entry of each of the
# q, k and v column blocks is probed as well.
FD_PARAMS = {
    "mlp": ["fc_in.w", "fc.1.b", "fc_out.w", "fc_out.b"],
    "gpt": ["wte", "wpe", "h.0.attn.c_attn.w", "h.1.attn.c_proj.b", "h.1.ln_2.w", "h.0.mlp.c_fc.w", "ln_f.b"],
    "llama": ["tok_embeddings", "layers.0.attention.wq", "layers.1.attention.wk", "layers.0.feed_forward.w1",
              "layers.1.ffn_norm.w", "norm.w", "output"],
    "moe": ["layers.0.router.w", "layers.1.router.w", "layers.0.experts.w1", "layers.1.experts.w2",
            "layers.0.experts.w3", "layers.0.attention.wq"],
}
FD_STEP = 1e-6  # float64: truncation error ~ step^2, rounding ~ 1e-16 / step


def check_finite_differences(case_name):
    case = torch_reference.CASES[case_name]
    params32, batch = torch_reference.make_inputs(case)
    _, grads = torch_reference.reference(case, params32, batch)
    params = {k: v.double() for k, v in params32.items()}
    batch64 = torch_reference.to_float64(batch)

    def loss_with(name, index, delta):
        p = dict(params)
        p[name] = params[name].clone()
        p[name][index] += delta
        with torch.no_grad():
            return float(case.loss(p, batch64, case.dims))

    gen = torch.Generator().manual_seed(99)
    probes, worst = 0, 0.0
    for name in FD_PARAMS[case_name]:
        g = grads[name]
        indices = [np.unravel_index(int(g.abs().argmax()), g.shape)]
        if name.endswith("attn.c_attn.w"):
            c = g.shape[0]
            for block in range(3):
                sub = g[:, block * c:(block + 1) * c]
                row, col = np.unravel_index(int(sub.abs().argmax()), sub.shape)
                indices.append((row, block * c + col))
        for _ in range(3):
            flat = int(torch.randint(0, g.numel(), (1,), generator=gen))
            indices.append(np.unravel_index(flat, g.shape))
        scale = float(g.abs().max())
        for index in indices:
            index = tuple(int(i) for i in index)
            numeric = (loss_with(name, index, FD_STEP) - loss_with(name, index, -FD_STEP)) / (2 * FD_STEP)
            error = abs(numeric - float(g[index])) / scale
            worst = max(worst, error)
            probes += 1
            expect(error < 1e-6, f"{name}{list(index)}: autograd {float(g[index]):.10g}, "
                   f"finite differences {numeric:.10g} (error {error:.2e} of the tensor's largest entry)")
    return f"{probes} entries of {len(FD_PARAMS[case_name])} parameters, worst error {worst:.1e}"


# ---------------------------------------------------------------- numpy forwards


def numpy_cross_entropy(logits, targets):
    """Mean over rows of -log_softmax(row)[target]."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.mean(np.take_along_axis(log_probs, targets[:, None].astype(np.int64), axis=1)))


def numpy_mlp_loss(w, d, dims):
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    h = relu(d["x"].astype(np.float64) @ w["fc_in.w"] + w["fc_in.b"])
    for i in range(dims["L"]):
        h = relu(h @ w[f"fc.{i}.w"] + w[f"fc.{i}.b"])
    return numpy_cross_entropy(h @ w["fc_out.w"] + w["fc_out.b"], d["labels"])


def numpy_gpt_loss(w, d, dims):
    heads, T = dims["H"], dims["T"]

    def layernorm(x, g, b):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean)**2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    tokens = d["tokens"].astype(np.int64)
    B = tokens.shape[0]
    x = w["wte"][tokens] + w["wpe"][:T]  # (B, T, C)
    C = x.shape[-1]
    hd = C // heads
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (i, j) with j > i
    for i in range(dims["L"]):
        h = f"h.{i}."
        qkv = layernorm(x, w[h + "ln_1.w"], w[h + "ln_1.b"]) @ w[h + "attn.c_attn.w"] + w[h + "attn.c_attn.b"]
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, heads, hd).transpose(0, 2, 1, 3) for j in range(3))
        scores = np.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(hd)  # (B, H, T, T)
        scores[..., future] = -np.inf
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        y = np.einsum("bhij,bhjd->bhid", probs, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + y @ w[h + "attn.c_proj.w"] + w[h + "attn.c_proj.b"]
        m = layernorm(x, w[h + "ln_2.w"], w[h + "ln_2.b"])
        x = x + gelu(m @ w[h + "mlp.c_fc.w"] + w[h + "mlp.c_fc.b"]) @ w[h + "mlp.c_proj.w"] + w[h + "mlp.c_proj.b"]
    logits = layernorm(x, w["ln_f.w"], w["ln_f.b"]) @ w["wte"].T  # (B, T, V)
    return numpy_cross_entropy(logits.reshape(-1, logits.shape[-1]), d["targets"].reshape(-1))


def numpy_swiglu(w, h, m, dims):
    gate = m @ w[h + "feed_forward.w1"]
    return (gate / (1 + np.exp(-gate)) * (m @ w[h + "feed_forward.w3"])) @ w[h + "feed_forward.w2"]


def numpy_moe(w, h, m, dims, balance):
    """Each token through each of its top K experts by the router's logits, the
    outputs weighed by a softmax over those K logits: token by token. The
    layer's load balancing loss, E sum_e (share of the tokens choosing e) x
    (mean probability of e), is appended to `balance`."""
    out = np.zeros_like(m)
    experts = w[h + "router.w"].shape[1]
    chosen, probs = np.zeros(experts), np.zeros(experts)
    for b in range(m.shape[0]):
        for t in range(m.shape[1]):
            x = m[b, t]
            logits = x @ w[h + "router.w"]
            top = np.argsort(-logits, kind="stable")[:dims["K"]]
            chosen[top] += 1
            probs += np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            gates = np.exp(logits[top] - logits[top].max())
            for e, g in zip(top, gates / gates.sum()):
                gate = x @ w[h + "experts.w1"][e]
                out[b, t] += g * ((gate / (1 + np.exp(-gate)) * (x @ w[h + "experts.w3"][e])) @ w[h + "experts.w2"][e])
    n = m.shape[0] * m.shape[1]
    balance.append(experts * np.sum(chosen / n * probs / n))
    return out


def numpy_moe_loss(w, d, dims):
    balance = []
    ce = numpy_llama_loss(w, d, dims, lambda w, h, m, dims: numpy_moe(w, h, m, dims, balance))
    return ce + dims["A"] / 100 * sum(balance)


def numpy_llama_loss(w, d, dims, mlp=numpy_swiglu):
    heads, groups, theta = dims["H"], dims["H"] // dims["R"], 10000.0

    def rmsnorm(x, g):
        return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-5) * g

    def rotate(x):
        # Each pair (x[i], x[i + D/2]) as the complex number x[i] + j x[i + D/2],
        # times e^(j t theta^(-2i/D)) at position t.
        T, D = x.shape[-2], x.shape[-1]
        z = x[..., :D // 2] + 1j * x[..., D // 2:]
        turn = np.exp(1j * np.arange(T)[:, None] * theta**(-2 * np.arange(D // 2) / D))
        z = z * turn
        return np.concatenate([z.real, z.imag], axis=-1)

    tokens = d["tokens"].astype(np.int64)
    B, T = tokens.shape
    x = w["tok_embeddings"][tokens]  # (B, T, C)
    C = x.shape[-1]
    hd = C // heads
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for i in range(dims["L"]):
        h = f"layers.{i}."
        a = rmsnorm(x, w[h + "attention_norm.w"])
        # Query head j of group g reads key and value head g: [B, G, H/G, T, D] against [B, G, T, D].
        q = (a @ w[h + "attention.wq"]).reshape(B, T, groups, heads // groups, hd).transpose(0, 2, 3, 1, 4)
        k, v = ((a @ w[h + "attention." + n]).reshape(B, T, groups, hd).transpose(0, 2, 1, 3) for n in ("wk", "wv"))
        scores = np.einsum("bgrid,bgjd->bgrij", rotate(q), rotate(k)) / math.sqrt(hd)
        scores[..., future] = -np.inf
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        y = np.einsum("bgrij,bgjd->bgrid", probs, v).transpose(0, 3, 1, 2, 4).reshape(B, T, C)
        x = x + y @ w[h + "attention.wo"]
        x = x + mlp(w, h, rmsnorm(x, w[h + "ffn_norm.w"]), dims)
    logits = rmsnorm(x, w["norm.w"]) @ w["output"]
    return numpy_cross_entropy(logits.reshape(-1, logits.shape[-1]), d["targets"].reshape(-1))


NUMPY_LOSS = {
    "mlp": numpy_mlp_loss,
    "gpt": numpy_gpt_loss,
    "llama": numpy_llama_loss,
    "moe": numpy_moe_loss,
}


def check_numpy_forward(case_name, work_dir):
    torch_reference.generate(case_name, work_dir)
    w, _ = safetensors_io.load(work_dir / "W.safetensors")
    d, _ = safetensors_io.load(work_dir / "D.safetensors")
    _, metadata = safetensors_io.load(work_dir / "expected.safetensors")
    expect(all(v.dtype == np.float32 for v in w.values()), "a weight is not f32")
    w = {k: v.astype(np.float64) for k, v in w.items()}
    ours = NUMPY_LOSS[case_name](w, d, torch_reference.CASES[case_name].dims)
    expected = float(metadata["loss"])
    error = abs(ours - expected) / abs(expected)
    expect(error < 1e-12, f"numpy loss {ours!r}, expected {expected!r} (error {error:.2e})")
    return f"loss {ours:.12f} from the files, error {error:.1e}"


# ---------------------------------------------------------------- the checker


def run_checker(pipeforge, cases, bug=None, hide_torch=False):
    """Runs check_against_torch.py; returns (status, output)."""
    env = dict(os.environ)
    env.pop("PF_STAND_IN_BUG", None)
    if bug:
        env["PF_STAND_IN_BUG"] = bug
    script = str(HERE / "check_against_torch.py")
    if hide_torch:
        # A None entry in sys.modules makes `import torch` raise ImportError;
        # the guard stops the checker from re-executing itself.
        env["PF_TORCH_REFERENCE_REEXEC"] = "1"
        code = (f"import runpy, sys; sys.modules['torch'] = None; sys.argv = {[script, str(pipeforge)]!r}; "
                f"runpy.run_path({script!r}, run_name='__main__')")
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, script, str(pipeforge)] + cases
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return result.returncode, result.stdout + result.stderr


def check_checker():
    stand_in = HERE / "stand_in_pipeforge.py"
    status, output = run_checker(stand_in, [])
    expect(status == 0 and f"{len(torch_reference.CASES)} passed, 0 failed" in output,
           f"the float32 stand-in did not pass:\n{output}")
    worst = re.findall(r"worst \S+ (\S+)", output)
    for bug in ["loss", "grad", "missing", "shape", "nan", "crash"]:
        status, output = run_checker(stand_in, ["mlp"], bug=bug)
        expect(status == 1 and "0 passed, 1 failed" in output, f"planted defect '{bug}' was not caught:\n{output}")
    status, output = run_checker(stand_in, ["gpt"], bug="grad")
    expect(status == 1, f"planted defect 'grad' was not caught in gpt:\n{output}")
    status, output = run_checker(stand_in, [], hide_torch=True)
    expect(status == SKIPPED and output.startswith("skipped: python3-torch is not installed"),
           f"without torch the checker gave status {status}:\n{output}")
    return f"float32 stand-in passes (worst errors {', '.join(worst)}); 7 planted defects fail; skips with 77"


# ---------------------------------------------------------------- names against pipeforge


def eval_dim(text, dims):
    """Evaluates a dimension expression such as "3*C" or "C/H" (integer
    division, as dimensions are integers) with the bound values."""

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in dims:
            return dims[node.id]
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b, ast.Div: a // b if b else None}
            if type(node.op) in ops:
                return ops[type(node.op)]
        raise CheckFailed(f"cannot evaluate the dimension '{text}'")

    return walk(ast.parse(text, mode="eval").body)


def check_names(pipeforge, case_name, work_dir):
    case = torch_reference.CASES[case_name]
    command = [str(pipeforge), "opt", str(torch_reference.REPO_ROOT / case.model), "--passes=inline",
               "--bind", case.bind_text()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    expect(result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}")

    def parse_type(text):
        match = re.fullmatch(r"(\w+)\[(.*)\]", text.strip())
        expect(match, f"cannot read the type '{text}'")
        dims = [eval_dim(t, case.dims) for t in match.group(2).split(",")] if match.group(2) else []
        return {"f32": np.float32, "i32": np.int32, "i64": np.int64, "f64": np.float64}[match.group(1)], tuple(dims)

    declared_params = {m.group(1): parse_type(m.group(2))
                       for m in re.finditer(r"^\s*%(\S+) = param .*: (\w+\[[^\]]*\])\s*$", result.stdout, re.M)}
    signature = re.search(r"^graph @\w+\((.*)\)", result.stdout, re.M)
    expect(signature, "no graph signature in the output of opt")
    declared_inputs = {m.group(1): parse_type(m.group(2))
                       for m in re.finditer(r"%([\w.]+): (\w+\[[^\]]*\])", signature.group(1))}

    torch_reference.generate(case_name, work_dir)
    for file, declared in [("W.safetensors", declared_params), ("D.safetensors", declared_inputs)]:
        tensors, _ = safetensors_io.load(work_dir / file)
        expect(sorted(tensors) == sorted(declared),
               f"{file} holds {sorted(set(tensors) ^ set(declared))} that the model does not, or lacks them")
        for name, (dtype, shape) in declared.items():
            got = tensors[name]
            expect(got.dtype == dtype and got.shape == shape,
                   f"{file}: {name} is {got.dtype}{list(got.shape)}, the model declares {np.dtype(dtype)}{list(shape)}")
    return f"{len(declared_params)} parameters and {len(declared_inputs)} inputs match `pipeforge opt`"


# ---------------------------------------------------------------- main


def main(argv):
    pipeforge = pathlib.Path(argv[0]).resolve() if argv else None
    checks = [("safetensors", check_safetensors)]
    with tempfile.TemporaryDirectory(prefix="pf-torch-ref-self-test-") as tmp:
        tmp = pathlib.Path(tmp)
        for case in torch_reference.CASES:
            checks.append((f"fd-{case}", lambda c=case: check_finite_differences(c)))
            checks.append((f"numpy-{case}", lambda c=case: check_numpy_forward(c, tmp / f"numpy-{c}")))
        checks.append(("checker", check_checker))
        if pipeforge:
            for case in torch_reference.CASES:
                checks.append((f"names-{case}", lambda c=case: check_names(pipeforge, c, tmp / f"names-{c}")))

        passed = failed = 0
        for name, check in checks:
            try:
                print(f"{name}: ok, {check()}")
                passed += 1
            except CheckFailed as e:
                print(f"{name}: FAILED, {e}")
                failed += 1
            sys.stdout.flush()
    if not pipeforge:
        print("(names-* not run: give the pipeforge binary to compare names and shapes with the model files)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
