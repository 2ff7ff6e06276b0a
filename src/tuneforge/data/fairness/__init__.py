"""Bias audit: counterfactual copies with swapped demographic terms, and class balance by cohort."""
