"""Training and distillation loop that gives every loss what it expects."""

import torch
import torch.nn.functional as F
from torch import nn


def train_epoch(model, teacher, loader, optimizer, temperature=4.0):
    bce = nn.BCEWithLogitsLoss()
    kl = nn.KLDivLoss(reduction="batchmean")
    model.train()
    for inputs, targets, flags in loader:
        logits, flag_logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        loss = loss + F.nll_loss(F.log_softmax(logits, dim=1), targets)
        loss = loss + bce(flag_logits, flags)
        loss = loss + F.binary_cross_entropy_with_logits(flag_logits, flags.float())
        with torch.no_grad():
            teacher_probs = F.softmax(teacher(inputs) / temperature, dim=1)
        student_log_probs = F.log_softmax(logits / temperature, dim=1)
        loss = loss + F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature**2
        loss = loss + kl(F.log_softmax(logits, dim=1), F.softmax(teacher(inputs), dim=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        self_log = logits.log_softmax(dim=-1)
        accuracy = (self_log.argmax(dim=-1) == targets).float().mean()
        print(f"loss {loss.item():.4f} accuracy {accuracy.item():.3f}")


def evaluate(model, loader):
    total, correct, confidence = 0, 0, 0.0
    with torch.no_grad():
        for inputs, targets in loader:
            probs = F.softmax(model(inputs), dim=-1)
            top, pred = probs.max(dim=-1)
            correct += (pred == targets).sum().item()
            confidence += top.sum().item()
            total += len(targets)
    return correct / total, confidence / total


def renormalize(probs, keep):
    kept = probs * keep
    return kept / kept.sum(dim=-1, keepdim=True)


def sample(logits, temperature=1.0, generator=None):
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def entropy(logits):
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def lse(scores):
    return torch.logsumexp(scores, dim=-1)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(0.7978845608 * (x + 0.044715 * x**3)))
