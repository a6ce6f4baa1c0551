"""Training and distillation loop with probabilities fed to the wrong losses."""

import torch
import torch.nn.functional as F
from torch import nn


def train_epoch(model, teacher, loader, optimizer, temperature=4.0):
    nll = nn.NLLLoss()
    bce = nn.BCELoss()
    model.train()
    for inputs, targets, flags in loader:
        logits, flag_logits = model(inputs)
        probs = F.softmax(logits, dim=1)
        loss = nll(probs, targets)  # expect: SMK202
        loss = loss + F.nll_loss(F.softmax(logits, dim=1), targets)  # expect: SMK202
        flag_probs = torch.sigmoid(flag_logits)
        loss = loss + bce(flag_probs, flags)  # expect: SMK204
        loss = loss + F.binary_cross_entropy(torch.sigmoid(flag_logits), flags)  # expect: SMK204
        with torch.no_grad():
            teacher_probs = F.softmax(teacher(inputs), dim=1) / temperature  # expect: SMK105
        student = F.softmax(logits, dim=1)
        loss = loss + F.kl_div(student, teacher_probs, reduction="batchmean")  # expect: SMK205
        loss = loss + F.cross_entropy(F.softmax(logits, dim=1), targets)  # expect: SMK201
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def sharpen(logits, T=0.5):
    log_probs = F.log_softmax(logits, dim=-1)
    scaled = log_probs * (1 / T)  # expect: SMK105
    probs = logits.softmax(-1)
    probs **= 1 / T  # expect: SMK105
    return scaled, probs


def log_likelihood(scores):
    return scores.softmax(dim=-1).log()  # expect: SMK102


def free_energy(scores):
    return -scores.exp().sum(dim=-1).log()  # expect: SMK103


def soft_targets(logits, targets):
    p = torch.softmax(logits, dim=-1)
    return -(targets * torch.log(p)).sum(dim=-1).mean()  # expect: SMK203


def log_odds(z):
    return torch.log(torch.sigmoid(z)) - z.sigmoid().log1p()  # expect: SMK303
