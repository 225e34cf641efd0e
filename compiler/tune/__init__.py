"""``kiln tune``: measure kernel schedules on this machine and cache what wins.

``cache.py`` is the cache file (``TuneCache``: per machine key, per kernel signature);
``search.py`` the measurement loop (``tune``); ``timer.py`` times one library in a subprocess.
``kiln compile`` (and ``build(..., tuned=TuneCache().tuned(target, threads))``) reuse the
results. The modules are imported by their full names: importing this package (as the timer
subprocess does) loads nothing.
"""
