"""Layer 6, app: the command line (:mod:`visiontales.app.cli`) and the demo page
(:mod:`visiontales.app.page`). Nothing below imports it.
"""
