"""A live explorer of a trained run, in the browser: `python -m multitx.explore run_dir=DIR` (__main__.py).

analysis.py runs the run's model on one input under multitx.trace (each task's own `inspect`) and turns
what it recorded into plain data; app.py serves that data and the page (static/: index.html, explorer.css
and its scripts, explorer.js first, which names the others) with Starlette; the page draws every map itself.
"""
