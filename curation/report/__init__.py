"""The HTML run report (`curate report OUT`): data.py reads the run, plots.py draws, galleries.py
picks thumbnails, html.py renders, build.py ties them together (`build_report`).

Nothing is imported here: `curate status` reads run folders through report.data and should not
pay for matplotlib.
"""
