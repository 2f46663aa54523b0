"""Converts a Hugging Face Llama or Mixtral checkpoint into examples/llama.pf (or examples/moe.pf) and its
parameters, with numpy alone.

    python3 examples/llama_from_hf.py HF_FOLDER OUT_FOLDER

HF_FOLDER holds what `save_pretrained` writes: config.json and model.safetensors (or the shards that
model.safetensors.index.json lists), in F32, F16 or BF16. OUT_FOLDER gets

    llama.pf             examples/llama.pf with the checkpoint's sizes as its dimensions' defaults
                         and its rms_norm_eps and rope_theta (moe.pf for a Mixtral checkpoint)
    weights.safetensors  every parameter in f32 under Pipeforge's names, each product's weight as
                         [in, out] (Hugging Face stores nn.Linear's [out, in])

after which `pipeforge sample OUT/llama.pf --weights OUT/weights.safetensors --ids --prompt 1,15043`
continues a prompt of token ids (tokenizing is left to the user's tokenizer), and `pipeforge run
OUT/llama.pf --init-from OUT/weights.safetensors ...` or `compile` go on training it. Hugging Face's
q and k projections are already in the "rotate half" order that `rope` turns, and its repeat_kv gives
query head h the key head h // R, as llama.pf's heads [H/R, R] do: no permutation is needed.

Llama, Llama 2, Llama 3 without rope_scaling, and the models of their shape (TinyLlama, SmolLM,
Mistral without a sliding window) convert; anything else is refused with the reason. A head tied to the
token table (tie_word_embeddings) is written as its own copy: sampling reads the same numbers, and
training then updates the two apart.

A Mixtral checkpoint (num_local_experts in its config) becomes examples/moe.pf: each layer's router
(block_sparse_moe.gate) and its experts' w1, w3 and w2, stacked [E, in, out]; its top num_experts_per_tok
experts per token, their softmax weights renormalised, as Mixtral's. Its router_aux_loss_coef weighs the
load balancing loss in training, which moe.pf sums layer by layer (Hugging Face pools every layer's
tokens into one); router_jitter_noise is refused.
"""

import json
import pathlib
import re
import struct
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from write_dataset import save_file  # noqa: E402  (examples/, on the path just above)


class ConversionError(Exception):
    pass


def read_safetensors(path):
    """{name: f32 array} of one safetensors file (F32, F16 and BF16 tensors)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        dtype = entry["dtype"]
        if dtype == "F32":
            array = np.frombuffer(raw, "<f4")
        elif dtype == "F16":
            array = np.frombuffer(raw, "<f2").astype(np.float32)
        elif dtype == "BF16":  # the upper half of an f32
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ConversionError(f"{path}: tensor {name} is {dtype}; only F32, F16 and BF16 convert")
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def read_weights(folder):
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        shards = ["model.safetensors"]
    else:
        raise ConversionError(f"{folder} has neither model.safetensors nor model.safetensors.index.json")
    tensors = {}
    for shard in shards:
        tensors.update(read_safetensors(folder / shard))
    return tensors


def is_mixtral(config):
    return "num_local_experts" in config


def model_file(dims):
    """The example a checkpoint of these dimensions becomes: moe.pf where it has experts."""
    return "moe.pf" if "E" in dims else "llama.pf"


def check_config(config):
    """The checkpoint's sizes as llama.pf's (or moe.pf's) dimensions, and its eps and theta; refuses what the
    model file is not."""
    model = "moe.pf" if is_mixtral(config) else "llama.pf"

    def refuse(why):
        raise ConversionError(f"config.json: {why}; {model} has no such model")

    def need(key):
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise ConversionError(f"config.json: {key} is {config.get(key)!r}, not a positive integer")
        return config[key]

    if config.get("hidden_act", "silu") != "silu":
        refuse(f"hidden_act is {config['hidden_act']!r}, not 'silu'")
    if config.get("rope_scaling"):
        refuse(f"rope_scaling is {config['rope_scaling']!r} (rope turns by theta^(-2i/D) unscaled)")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            refuse(f"{flag} is true (llama.pf's products have no biases)")
    if config.get("sliding_window"):
        refuse(f"sliding_window is {config['sliding_window']} (llama.pf attends to every earlier position)")
    heads, width = need("num_attention_heads"), need("hidden_size")
    kv_heads = need("num_key_value_heads") if "num_key_value_heads" in config else heads
    if width % heads or heads % kv_heads:
        refuse(f"{heads} heads of a width of {width} over {kv_heads} key and value heads do not divide")
    if config.get("head_dim", width // heads) != width // heads:
        refuse(f"head_dim is {config['head_dim']}, not hidden_size / num_attention_heads = {width // heads}")
    dims = {
        "T": min(config.get("max_position_embeddings", 2048), 4096),  # a longer context: --bind T=...
        "C": width,
        "H": heads,
        "R": heads // kv_heads,
        "F": need("intermediate_size"),
        "L": need("num_hidden_layers"),
        "V": need("vocab_size"),
    }
    if is_mixtral(config):
        dims["E"], dims["K"] = need("num_local_experts"), need("num_experts_per_tok")
        if dims["K"] > dims["E"]:
            refuse(f"num_experts_per_tok is {dims['K']}, more than the {dims['E']} experts")
        if config.get("router_jitter_noise"):
            refuse(f"router_jitter_noise is {config['router_jitter_noise']} (the router's logits are used as they are)")
    return dims, float(config.get("rms_norm_eps", 1e-6)), float(config.get("rope_theta", 10000.0))


def model_text(dims, eps, theta, source, balance=None):
    """The model file with the checkpoint's numbers; `balance` the load balancing loss's weight (moe.pf)."""
    model = model_file(dims)
    text = (HERE / model).read_text()
    if balance is not None:
        # moe.pf weighs the balancing loss A/100: a whole percentage sets A, any other weight the hundredth.
        percent = round(balance * 100)
        if abs(percent - balance * 100) < 1e-9 * max(1.0, balance * 100):
            dims = dict(dims, A=percent)
        else:
            dims = dict(dims, A=1)
            text, n = re.subn(r"constant value=0\.01 ", f"constant value={balance!r} ", text)
            assert n == 1, f"{model} has no constant 0.01 weighing its balancing loss"
    for name, value in dims.items():
        text, n = re.subn(rf"^dim {name} = \d+$", f"dim {name} = {value}", text, flags=re.M)
        assert n == 1, f"{model} declares no dim {name}"
    text = text.replace("eps=1e-5", f"eps={eps!r}").replace("theta=10000", f"theta={theta!r}")
    return f"// Converted from {source} by examples/llama_from_hf.py.\n" + text


def converted(tensors, dims, tied):
    """Pipeforge's parameters from Hugging Face's tensors: {name: f32 array}."""
    def take(name):
        if name not in tensors:
            raise ConversionError(f"the checkpoint has no tensor {name}")
        return tensors.pop(name)

    def linear(name):  # nn.Linear's [out, in] as a product's [in, out]
        return np.ascontiguousarray(take(name).T)

    out = {"tok_embeddings": take("model.embed_tokens.weight")}
    for i in range(dims["L"]):
        hf, pf = f"model.layers.{i}.", f"layers.{i}."
        out[pf + "attention_norm.w"] = take(hf + "input_layernorm.weight")
        for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
            out[pf + "attention." + ours] = linear(hf + f"self_attn.{theirs}.weight")
        out[pf + "ffn_norm.w"] = take(hf + "post_attention_layernorm.weight")
        if "E" in dims:  # Mixtral: the router and each expert's SwiGLU, stacked [E, in, out]
            moe = hf + "block_sparse_moe."
            out[pf + "router.w"] = linear(moe + "gate.weight")
            for w in ("w1", "w3", "w2"):
                out[pf + "experts." + w] = np.stack([linear(moe + f"experts.{e}.{w}.weight") for e in range(dims["E"])])
            continue
        for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            out[pf + "feed_forward." + ours] = linear(hf + f"mlp.{theirs}.weight")
    out["norm.w"] = take("model.norm.weight")
    if "lm_head.weight" in tensors:
        out["output"] = linear("lm_head.weight")
    elif tied:
        out["output"] = np.ascontiguousarray(out["tok_embeddings"].T)
    else:
        raise ConversionError("the checkpoint has no lm_head.weight and its config does not tie it to the tokens")
    tensors.pop("lm_head.weight", None)
    left = sorted(n for n in tensors if not n.endswith("rotary_emb.inv_freq"))
    if left:
        model = model_file(dims)
        raise ConversionError(f"the checkpoint holds tensors {model} has no place for: {', '.join(left[:5])}")
    return {name: np.asarray(a, dtype=np.float32) for name, a in out.items()}


def convert(hf_folder, out_folder):
    hf_folder, out_folder = pathlib.Path(hf_folder), pathlib.Path(out_folder)
    config = json.loads((hf_folder / "config.json").read_text())
    dims, eps, theta = check_config(config)
    params = converted(read_weights(hf_folder), dims, config.get("tie_word_embeddings", False))
    balance = float(config.get("router_aux_loss_coef", 0.001)) if is_mixtral(config) else None
    out_folder.mkdir(parents=True, exist_ok=True)
    (out_folder / model_file(dims)).write_text(model_text(dims, eps, theta, hf_folder.name, balance))
    save_file(params, out_folder / "weights.safetensors")
    return dims, sum(a.size for a in params.values())


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        dims, count = convert(argv[0], argv[1])
    except (ConversionError, OSError, json.JSONDecodeError) as e:
        print(f"llama_from_hf.py: {e}", file=sys.stderr)
        return 1
    out = pathlib.Path(argv[1])
    model = out / model_file(dims)
    print(f"wrote {model} ({', '.join(f'{k}={v}' for k, v in dims.items())}) and "
          f"{out / 'weights.safetensors'} ({count:,} parameters)")
    print(f"sample: pipeforge sample {model} --weights {out / 'weights.safetensors'} --ids --prompt 1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
