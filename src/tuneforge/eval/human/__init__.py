"""Human evaluation: blinded pairwise sheets of base vs tuned answers (`sheet`), the raters' choices read back,
un-blinded and summarised with intervals and inter-rater agreement (`results`, `agreement`)."""
