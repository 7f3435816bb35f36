"""Look inside a trained run: `python -m multitx.inspect run_dir=DIR` (see __main__.py).

runs.py loads a run and traces one forward pass, shapes.py writes the shape trace,
maps.py draws the attention maps, page.py puts everything on one HTML page.
"""
