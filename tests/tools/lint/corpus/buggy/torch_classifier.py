"""A small transformer classifier whose head returns probabilities."""

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
        scores = scores.masked_fill(~padding_mask[:, None, None, :], float("-inf"))
        attn = F.softmax(scores, dim=-1)  # expect: SMK106
        out = (attn @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(out)


class Classifier(nn.Module):
    def __init__(self, vocab, dim, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = SelfAttention(dim, heads=4)
        self.head = nn.Sequential(
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Linear(dim, classes),
            nn.Softmax(),  # expect: SMK104
        )

    def forward(self, tokens, padding_mask):
        h = self.attn(self.embed(tokens), padding_mask)
        return self.head(h.mean(dim=1))


class TaggerHead(nn.Module):
    def __init__(self, dim, tags):
        super().__init__()
        self.proj = nn.Linear(dim, tags)
        self.act = nn.Softmax(dim=-1)

    def forward(self, h):
        return self.act(self.proj(h))


def train(loader, epochs=3):
    model = Classifier(vocab=1000, dim=64, classes=5)
    tagger = TaggerHead(64, 9)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for tokens, padding_mask, labels, tags, h in loader:
            probs = model(tokens, padding_mask)
            loss = criterion(probs, labels)  # expect: SMK201
            log_probs = torch.log(tagger(h))  # expect: SMK102
            loss = loss + F.nll_loss(log_probs.flatten(0, 1), tags.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
