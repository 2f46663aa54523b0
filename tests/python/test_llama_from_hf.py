"""examples/llama_from_hf.py: a checkpoint in Hugging Face's layout (names, [out, in] products, bf16) becomes
llama.pf and weights whose logits are those of Hugging Face's Llama formulas, computed here in float64 with
numpy (RMSNorm, rotate-half rotary embeddings at the config's theta, repeat_kv, SwiGLU); a Mixtral checkpoint
becomes moe.pf, its logits those of Mixtral's sparse MoE block; and what the model file cannot hold is refused
with the reason."""

import json
import subprocess
import sys

import numpy as np
import pytest

import pipeforge
from conftest import SOURCE_DIR

CONVERTER = SOURCE_DIR / "examples" / "llama_from_hf.py"

CONFIG = {
    "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "num_hidden_layers": 2, "vocab_size": 40, "max_position_embeddings": 16,
    "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False,
}


MIXTRAL = dict(CONFIG, model_type="mixtral", intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
               router_aux_loss_coef=0.02)


def to_bf16(a):
    """f32 rounded to the nearest bf16 (ties to even), as the upper halves of the f32 bits."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16(arrays, path):
    """A safetensors file of BF16 tensors, as Hugging Face checkpoints mostly are."""
    header, offset, blobs = {}, 0, []
    for name, a in arrays.items():
        blob = to_bf16(a).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def hf_checkpoint(folder, config):
    """Random weights under Hugging Face's names and layouts; returns them as bf16 values in float64."""
    rng = np.random.default_rng(3)
    c, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (c // config["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": (v, c), "model.norm.weight": (c,), "lm_head.weight": (v, c)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (c,), p + "post_attention_layernorm.weight": (c,),
                       p + "self_attn.q_proj.weight": (c, c), p + "self_attn.k_proj.weight": (kv, c),
                       p + "self_attn.v_proj.weight": (kv, c), p + "self_attn.o_proj.weight": (c, c)})
        if "num_local_experts" in config:
            moe = p + "block_sparse_moe."
            shapes[moe + "gate.weight"] = (config["num_local_experts"], c)
            for e in range(config["num_local_experts"]):
                shapes.update({moe + f"experts.{e}.w1.weight": (f, c), moe + f"experts.{e}.w3.weight": (f, c),
                               moe + f"experts.{e}.w2.weight": (c, f)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (f, c), p + "mlp.up_proj.weight": (f, c),
                           p + "mlp.down_proj.weight": (c, f)})
    weights = {n: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else rng.standard_normal(s) / np.sqrt(s[-1]))
               for n, s in shapes.items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_bf16(weights, folder / "model.safetensors")
    return {n: (to_bf16(a).astype(np.uint32) << 16).view(np.float32).astype(np.float64) for n, a in weights.items()}


def silu(x):
    return x / (1 + np.exp(-x))


def mixtral_moe(w, moe, m, top_k):
    """Hugging Face's MixtralSparseMoeBlock: each token's top_k experts by router probability, their
    probabilities renormalised to sum to 1, the experts' SwiGLU outputs added so weighed."""
    logits = m @ w[moe + "gate.weight"].T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.zeros_like(m)
    for n in range(m.shape[0]):
        chosen = np.argsort(-probs[n], kind="stable")[:top_k]
        for e in chosen:
            x = m[n]
            up = silu(x @ w[moe + f"experts.{e}.w1.weight"].T) * (x @ w[moe + f"experts.{e}.w3.weight"].T)
            out[n] += probs[n, e] / probs[n, chosen].sum() * (up @ w[moe + f"experts.{e}.w2.weight"].T)
    return out


def hf_logits(w, config, tokens):
    """Hugging Face's LlamaForCausalLM (or MixtralForCausalLM) forward, op for op in float64: the logits at
    every position."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    t = len(tokens)

    def rmsnorm(x, g):
        return g * (x / np.sqrt((x**2).mean(-1, keepdims=True) + eps))

    def rotary(x):  # (heads, T, D)
        d = x.shape[-1]
        inv_freq = 1.0 / theta**(np.arange(0, d, 2) / d)
        emb = np.concatenate([np.outer(np.arange(t), inv_freq)] * 2, axis=-1)
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
        return x * np.cos(emb) + rotated * np.sin(emb)

    x = w["model.embed_tokens.weight"][tokens]
    c = x.shape[-1]
    hd = c // heads
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rmsnorm(x, w[p + "input_layernorm.weight"])
        q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(t, heads, hd).transpose(1, 0, 2)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, hd).transpose(1, 0, 2)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, hd).transpose(1, 0, 2)
        q, k = rotary(q), rotary(k)
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)  # repeat_kv
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        scores[:, np.triu(np.ones((t, t), bool), 1)] = -np.inf
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + (probs @ v).transpose(1, 0, 2).reshape(t, c) @ w[p + "self_attn.o_proj.weight"].T
        m = rmsnorm(x, w[p + "post_attention_layernorm.weight"])
        if "num_local_experts" in config:
            x = x + mixtral_moe(w, p + "block_sparse_moe.", m, config["num_experts_per_tok"])
            continue
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        x = x + (silu(gate) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rmsnorm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def convert(hf, out):
    return subprocess.run([sys.executable, str(CONVERTER), str(hf), str(out)], capture_output=True, text=True)


def expect_hugging_faces_logits(lm, weights, config):
    """The converted model's logits after 1, 4 and 10 tokens are the reference's, and greedy decoding over
    the cache follows the reference's most likely tokens."""
    tokens = [3, 17, 17, 39, 0, 8, 25, 11, 4, 30]
    want = hf_logits(weights, config, tokens)
    for n in (1, 4, len(tokens)):
        got = lm.logits(tokens[:n])
        assert np.abs(got - want[n - 1]).max() <= 1e-4 * np.abs(want[n - 1]).max(), n
    drawn = lm.generate(tokens[:4], 3, temperature=0)
    sequence = tokens[:4]
    for token in drawn:
        assert token == int(np.argmax(hf_logits(weights, config, sequence)[-1]))
        sequence = sequence + [token]


def test_logits_are_hugging_faces(tmp_path):
    weights = hf_checkpoint(tmp_path / "hf", CONFIG)
    done = convert(tmp_path / "hf", tmp_path / "pf")
    assert done.returncode == 0, done.stderr
    assert "(T=16, C=32, H=4, R=2, F=48, L=2, V=40)" in done.stdout
    text = (tmp_path / "pf" / "llama.pf").read_text()
    assert "eps=1e-06" in text and "theta=500000.0" in text
    lm = pipeforge.LanguageModel(str(tmp_path / "pf" / "llama.pf"), tmp_path / "pf" / "weights.safetensors")
    assert (lm.context, lm.vocabulary) == (16, 40)
    expect_hugging_faces_logits(lm, weights, CONFIG)


def test_mixtral_logits_are_hugging_faces(tmp_path):
    weights = hf_checkpoint(tmp_path / "hf", MIXTRAL)
    done = convert(tmp_path / "hf", tmp_path / "pf")
    assert done.returncode == 0, done.stderr
    assert "moe.pf (T=16, C=32, H=4, R=2, F=24, L=2, V=40, E=4, K=2)" in done.stdout
    text = (tmp_path / "pf" / "moe.pf").read_text()
    assert "dim A = 2\n" in text and "constant value=0.01 " in text  # router_aux_loss_coef 0.02: A/100
    lm = pipeforge.LanguageModel(str(tmp_path / "pf" / "moe.pf"), tmp_path / "pf" / "weights.safetensors")
    expect_hugging_faces_logits(lm, weights, MIXTRAL)


def test_a_balancing_weight_that_is_no_whole_percentage_is_written_as_it_is(tmp_path):
    hf_checkpoint(tmp_path / "hf", dict(MIXTRAL, router_aux_loss_coef=0.001))
    assert convert(tmp_path / "hf", tmp_path / "pf").returncode == 0
    text = (tmp_path / "pf" / "moe.pf").read_text()
    assert "dim A = 1\n" in text and "constant value=0.001 " in text and "value=0.01 " not in text


def test_a_tied_head_is_the_token_table(tmp_path):
    config = dict(CONFIG, tie_word_embeddings=True)
    weights = hf_checkpoint(tmp_path / "hf", config)
    # Saved again without lm_head, as a tied checkpoint is.
    save_bf16({n: a for n, a in weights.items() if n != "lm_head.weight"}, tmp_path / "hf" / "model.safetensors")
    assert convert(tmp_path / "hf", tmp_path / "pf").returncode == 0
    lm = pipeforge.LanguageModel(str(tmp_path / "pf" / "llama.pf"), tmp_path / "pf" / "weights.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    want = hf_logits(weights, config, [5, 6, 7])[-1]
    assert np.abs(lm.logits([5, 6, 7]) - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "config.json: rope_scaling is {'rope_type': 'llama3', "
     "'factor': 8.0} (rope turns by theta^(-2i/D) unscaled); llama.pf has no such model"),
    ({"hidden_act": "gelu"}, "config.json: hidden_act is 'gelu', not 'silu'; llama.pf has no such model"),
    ({"num_key_value_heads": 3}, "config.json: 4 heads of a width of 32 over 3 key and value heads do not divide; "
     "llama.pf has no such model"),
    ({"hidden_size": None}, "config.json: hidden_size is None, not a positive integer"),
    ({"num_local_experts": 2, "num_experts_per_tok": 3},
     "config.json: num_experts_per_tok is 3, more than the 2 experts; moe.pf has no such model"),
    ({"num_local_experts": 4, "num_experts_per_tok": 2, "router_jitter_noise": 0.01},
     "config.json: router_jitter_noise is 0.01 (the router's logits are used as they are); moe.pf has no such model"),
])
def test_refuses_what_llama_pf_is_not(tmp_path, change, message):
    hf_checkpoint(tmp_path / "hf", CONFIG)
    (tmp_path / "hf" / "config.json").write_text(json.dumps(dict(CONFIG, **change)))
    done = convert(tmp_path / "hf", tmp_path / "pf")
    assert (done.returncode, done.stderr.strip()) == (1, "llama_from_hf.py: " + message)
    assert not (tmp_path / "pf").exists()


def test_a_missing_tensor_is_named(tmp_path):
    weights = hf_checkpoint(tmp_path / "hf", CONFIG)
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_bf16(weights, tmp_path / "hf" / "model.safetensors")
    done = convert(tmp_path / "hf", tmp_path / "pf")
    assert (done.returncode, done.stderr.strip()) == (
        1, "llama_from_hf.py: the checkpoint has no tensor model.layers.1.mlp.up_proj.weight")
