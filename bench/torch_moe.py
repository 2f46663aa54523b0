"""The Mixtral-style decoder of examples/moe.pf in plain torch.nn, as a PyTorch user writes it.

bench/torch_llama.py's blocks with the MLP replaced by Hugging Face's MixtralSparseMoeBlock: a bias-free router,
the softmax of its logits, each token's top k of them renormalised, and each expert (a SwiGLU MLP) run on the
tokens that chose it (torch.where over the one-hot choices, index_add_ back), plus the load balancing loss of
load_balancing_loss_func per layer, weighed 0.01 as examples/moe.pf's A=1. bench/torch_step_server.py
--model moe times its training step beside bench/train_step_bench's.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_llama


class SparseMoe(nn.Module):
    def __init__(self, dim, hidden, experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList([torch_llama.FeedForward(dim, hidden) for _ in range(experts)])

    def forward(self, x):
        B, T, C = x.shape
        tokens = x.view(-1, C)
        probs = F.softmax(self.gate(tokens), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        mask = F.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)  # (E, K, N)
        for e, expert in enumerate(self.experts):
            slot, rows = torch.where(mask[e])
            out.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slot, None])
        share = F.one_hot(chosen, num_classes=len(self.experts)).float().mean(dim=0)  # (K, E)
        balance = torch.sum(share * probs.mean(dim=0)[None, :]) * len(self.experts)
        return out.view(B, T, C), balance


class Block(nn.Module):
    def __init__(self, dim, n_head, hidden, seq, experts, top_k):
        super().__init__()
        self.attention_norm = torch_llama.RMSNorm(dim)
        self.attention = torch_llama.Attention(dim, n_head, seq)
        self.ffn_norm = torch_llama.RMSNorm(dim)
        self.moe = SparseMoe(dim, hidden, experts, top_k)

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))
        y, balance = self.moe(self.ffn_norm(x))
        return x + y, balance


class Mixtral(nn.Module):
    def __init__(self, n_layer=4, dim=512, n_head=8, hidden=768, seq=128, vocab=8192, experts=8, top_k=2):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Block(dim, n_head, hidden, seq, experts, top_k) for _ in range(n_layer)])
        self.norm = torch_llama.RMSNorm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        """The logits and the sum of the layers' load balancing losses."""
        x, balance = self.tok_embeddings(idx), 0.0
        for layer in self.layers:
            x, b = layer(x)
            balance = balance + b
        return self.output(self.norm(x)), balance
