"""Labelling practices: which rows to label next (active learning) and how far annotators agree."""
