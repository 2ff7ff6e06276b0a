"""Recipes: the orchestrations that compose the parts (models, data, methods, objectives, eval, export).

`finetune` is the training run (config -> data -> method x objective -> train -> evaluate -> export -> report);
`export` is the one export step, shared by a finishing run and `tuneforge export RUN`. Recipes sit above every
part they compose; no part imports a recipe.
"""
