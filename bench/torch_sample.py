"""PyTorch's side of bench/sample_bench.sh: the same GPT-2 small-shaped model
(12 blocks of width 768, 12 heads, T = 1024, a byte vocabulary, tied
embedding, GELU (tanh), pre-LayerNorm) drawing tokens one at a time over a
cache of keys and values, as Hugging Face's generate() does with
past_key_values: the prompt in one forward, then each token alone,
attending to the cached keys and values.

Prints milliseconds per drawn token (after the first, which reads the
prompt) for each prompt length, as JSON: {"8": 11.2, "100": ...}. With
--batch k, k samples of the prompt are drawn side by side (generate()'s
num_return_sequences): the milliseconds are then per step, a token of each.

    /usr/bin/python3 bench/torch_sample.py --threads 1 --prompts 8,100,500,1000 --tokens 17 [--batch 4]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

L, C, H, T, V = 12, 768, 12, 1024, 256


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(C)
        self.c_attn = torch.nn.Linear(C, 3 * C)
        self.c_proj = torch.nn.Linear(C, C)
        self.ln_2 = torch.nn.LayerNorm(C)
        self.c_fc = torch.nn.Linear(C, 4 * C)
        self.mlp_proj = torch.nn.Linear(4 * C, C)

    def forward(self, x, cache, filled):
        """x: [b, n, C] at positions filled .. filled + n - 1; cache: (k, v) of [b, H, T, C/H], written here."""
        b, n = x.shape[0], x.shape[1]
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(b, n, H, C // H).transpose(1, 2) for t in (q, k, v))
        cache[0][:, :, filled:filled + n] = k
        cache[1][:, :, filled:filled + n] = v
        keys, values = cache[0][:, :, :filled + n], cache[1][:, :, :filled + n]
        att = torch.matmul(q, keys.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        if n > 1:  # the prompt: each position sees those up to its own
            mask = torch.ones(n, filled + n, dtype=torch.bool).tril(diagonal=filled)
            att = att.masked_fill(~mask, float("-inf"))
        y = torch.matmul(F.softmax(att, dim=-1), values).transpose(1, 2).reshape(b, n, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(V, C)
        self.wpe = torch.nn.Embedding(T, C)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(C)

    def forward(self, tokens, caches, filled):
        positions = torch.arange(filled, filled + tokens.shape[1])
        x = self.wte(tokens) + self.wpe(positions)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache, filled)
        return torch.matmul(self.ln_f(x[:, -1]), self.wte.weight.t())  # the last position's logits


def ms_per_token(model, prompt, tokens, batch):
    caches = [(torch.zeros(batch, H, T, C // H), torch.zeros(batch, H, T, C // H)) for _ in range(L)]
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([prompt] * batch)
    logits = model(ids, caches, 0)
    filled = len(prompt)
    start = None
    for n in range(tokens):
        token = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        if n == 0:
            start = time.perf_counter()  # the first token drawn: the prompt is read
        if n + 1 < tokens:
            logits = model(token, caches, filled)
            filled += 1
    return (time.perf_counter() - start) * 1e3 / (tokens - 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", default="8,100,500,1000")
    parser.add_argument("--tokens", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT().eval()
    text = list(b"pipeforge samples text. " * 100)
    out = {}
    with torch.inference_mode():
        for n in (int(p) for p in args.prompts.split(",")):
            out[n] = round(ms_per_token(model, text[:n], min(args.tokens, T - n), args.batch), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
