"""Code that resembles the reported patterns but is correct."""

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class LitModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.softmax = nn.Softmax(dim=-1)
        self.net = nn.Linear(4, 3)

    def log(self, name, value):
        logger.info("%s=%s", name, value)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss

    def probabilities(self, x):
        return self.softmax(self(x))


def soft_label_loss(logits, soft_targets):
    return F.cross_entropy(logits, F.softmax(soft_targets, dim=-1))


def compound_interest(rate, years):
    return math.exp(rate * years)


def smooth_counts(counts):
    return np.log(counts + 0.5)


def ratio(a, b):
    return np.exp(a) / np.exp(b)


def weights(x):
    w = np.exp(x)
    return w / 2.0


def pool(probs_a, probs_b):
    return (probs_a + probs_b) / 2


def masked_mean(x, mask):
    x = x.masked_fill(~mask, 0.0)
    return x.sum(dim=-1) / mask.sum(dim=-1)


def shifted_torch(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def shifted_torch_tuple(x):
    e = (x - x.max(dim=-1, keepdim=True)[0]).exp()
    return e / e.sum(dim=-1, keepdim=True)


def average_over_steps(probs_per_step, T):
    return torch.stack(probs_per_step).sum(0) / T


def log_base_two(x):
    return math.log(1 + x, 2)


def softmax_1d(x):
    return F.softmax(x, 0)
