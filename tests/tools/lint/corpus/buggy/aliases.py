"""Names reached through unusual imports and aliases."""

import math

import numpy as anything
import scipy.special
import torch
from torch.nn.functional import cross_entropy as xent
from torch.nn.functional import log_softmax
from torch.nn.functional import softmax as sm


def a(x, y):
    p = sm(x, dim=1)
    return xent(p, y)  # expect: SMK201


def b(x):
    return torch.log(sm(x, dim=1))  # expect: SMK102


def c(x):
    return anything.log(scipy.special.softmax(x, axis=-1))  # expect: SMK102


def d(x):
    return math.log(1 + x) + (math.exp(x) - 1)  # expect: SMK301 SMK302


def e(x):
    return (x.exp() - 1) * (1.0 + x).log()  # expect: SMK301 SMK302


def f(x):
    return torch.special.softmax(x, dim=0).log() + log_softmax(x, dim=0)  # expect: SMK102


def g(x):
    return scipy.special.softmax(x) ** (1 / x.temperature)  # expect: SMK105


PROBS = torch.softmax(torch.randn(4, 3), dim=1)


def h(y):
    return xent(PROBS, y)  # expect: SMK201
