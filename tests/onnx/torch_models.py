"""The PyTorch models the ONNX round trip exports: an MLP, a CNN, a small
GPT and a Llama-style decoder, each with a deterministic batch and its loss,
written as a user would write them (nn.Linear, nn.Conv2d, nn.LayerNorm,
nn.GELU, a registered causal mask, a head tied to the embedding; Llama's
RMSNorm and SwiGLU as Hugging Face writes them)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

class MLP(nn.Module):
    def __init__(self, inputs=32, hidden=64, classes=10):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, classes))

    def forward(self, x):
        return self.layers(x)

class CNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, classes)

    def forward(self, images):
        x = F.max_pool2d(F.relu(self.stem(images)), 2)
        x = F.avg_pool2d(F.relu(self.down(x)), 2)
        return self.fc(torch.flatten(x, 1))

class Block(nn.Module):
    def __init__(self, width, heads, context):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.out = nn.Linear(4 * width, width)
        self.register_buffer("mask", torch.tril(torch.ones(context, context, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        att = att.masked_fill(~self.mask[:t, :t], float("-inf"))
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(self.act(self.fc(self.ln_2(x))))

class GPT(nn.Module):
    def __init__(self, vocab=64, width=32, heads=4, context=8, layers=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList([Block(width, heads, context) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe.weight[: tokens.shape[1]]
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # the head shares the embedding

class RMSNorm(nn.Module):
    """Hugging Face's LlamaRMSNorm."""

    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width) + 0.1 * torch.randn(width))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

class LlamaBlock(nn.Module):
    """RMSNorm, causal attention without biases, RMSNorm, a SwiGLU MLP (no
    rotary embeddings: their cos and sin buffers would import as weights)."""

    def __init__(self, width, heads, context):
        super().__init__()
        self.heads = heads
        self.attention_norm = RMSNorm(width)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(width, width, bias=False) for _ in range(4))
        self.ffn_norm = RMSNorm(width)
        self.w1, self.w3 = nn.Linear(width, 2 * width, bias=False), nn.Linear(width, 2 * width, bias=False)
        self.w2 = nn.Linear(2 * width, width, bias=False)
        self.register_buffer("mask", torch.tril(torch.ones(context, context, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        a = self.attention_norm(x)
        q, k, v = (w(a).view(b, t, self.heads, c // self.heads).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        att = att.masked_fill(~self.mask[:t, :t], float("-inf"))
        x = x + self.wo((F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, c))
        m = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(m)) * self.w3(m))

class Llama(nn.Module):
    def __init__(self, vocab=64, width=32, heads=4, context=8, layers=2):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList([LlamaBlock(width, heads, context) for _ in range(layers)])
        self.norm = RMSNorm(width)
        self.output = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens):
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))

class Case:
    """One model: how to build it, its batch (by input name), its loss, and
    how the export and the import see it."""

    def __init__(self, make, inputs, batch, loss, opset, target):
        self.make, self.inputs, self.batch, self.loss, self.opset, self.target = make, inputs, batch, loss, opset, target

def _mlp_batch(gen):
    return {"x": torch.randn(8, 32, generator=gen), "labels": torch.randint(0, 10, (8,), generator=gen)}

def _cnn_batch(gen):
    return {"images": torch.randn(8, 3, 16, 16, generator=gen), "labels": torch.randint(0, 10, (8,), generator=gen)}

def _gpt_batch(gen):
    return {"tokens": torch.randint(0, 64, (4, 8), generator=gen), "targets": torch.randint(0, 64, (4, 8), generator=gen)}

def _cross_entropy(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

CASES = {
    "mlp": Case(MLP, ["x"], _mlp_batch, _cross_entropy, 13, "labels"),
    "cnn": Case(CNN, ["images"], _cnn_batch, _cross_entropy, 15, "labels"),
    "gpt": Case(GPT, ["tokens"], _gpt_batch, _cross_entropy, 17, "targets"),
    # Before opset 17 layer norm is exported as its arithmetic: the importer fuses it back.
    "gpt_opset13": Case(GPT, ["tokens"], _gpt_batch, _cross_entropy, 13, "targets"),
    # RMSNorm and SiLU arrive as their arithmetic and are fused back into rmsnorm and silu.
    "llama": Case(Llama, ["tokens"], _gpt_batch, _cross_entropy, 17, "targets"),
}
