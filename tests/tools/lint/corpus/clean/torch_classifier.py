"""A small transformer classifier that keeps logits until the loss."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, padding_mask):
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, -1).transpose(1, 2)
        k = k.view(b, t, self.heads, -1).transpose(1, 2)
        v = v.view(b, t, self.heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = F.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(out)


class GuardedAttention(nn.Module):
    def forward(self, scores, mask):
        scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        attn = torch.nan_to_num(attn, nan=0.0)
        inline = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return attn, inline


class Classifier(nn.Module):
    def __init__(self, vocab, dim, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = SelfAttention(dim, heads=4)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, classes))
        self.log_softmax = nn.LogSoftmax(dim=-1)

    def forward(self, tokens, padding_mask):
        h = self.attn(self.embed(tokens), padding_mask)
        return self.head(h.mean(dim=1))

    def log_probs(self, tokens, padding_mask):
        return self.log_softmax(self.forward(tokens, padding_mask))

    @torch.no_grad()
    def predict_proba(self, tokens, padding_mask):
        return F.softmax(self(tokens, padding_mask), dim=-1)


class CalibratedHead(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.proj = nn.Linear(dim, classes)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, h):
        logits = self.proj(h)
        if self.training:
            return logits
        return F.softmax(logits / self.temperature, dim=-1)


def train(loader, epochs=3):
    model = Classifier(vocab=1000, dim=64, classes=5)
    head = CalibratedHead(64, 5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    nll = nn.NLLLoss()
    for _ in range(epochs):
        for tokens, padding_mask, labels, h in loader:
            logits = model(tokens, padding_mask)
            loss = criterion(logits, labels)
            loss = loss + nll(model.log_probs(tokens, padding_mask), labels)
            loss = loss + criterion(head(h), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    probs = model.predict_proba(tokens, padding_mask)
    return probs.argmax(dim=-1), probs.max(dim=-1).values
