"""Vocabulary-parallel losses on ``torch.distributed``: the classes of each row split across the ranks of a group."""
