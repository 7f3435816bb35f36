"""A live explorer of a trained run, in the browser: `python -m multitx.explore run_dir=DIR` (__main__.py).

analysis.py runs the run's model on one input under multitx.trace (each task's own `inspect`) and turns
what it recorded into plain data; app.py serves that data and the page (static/: index.html,
explorer.js, explorer.css) with Starlette; the page draws every map itself.
"""
