"""Training the prompt network (edge_vos.prompt.model): its samples (data.py) and loop (train.py).

    python -m edge_vos.train.prompt.train --out runs/prompt ...

Kept apart from the model layer: inference (edge_vos.prompt) never imports training code.
"""
