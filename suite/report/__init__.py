"""HTML report: tables.py (store -> pandas), figures.py (matplotlib), claims.py (verdicts),
compare.py (two runs), build.py (puts it together with the Jinja2 template)."""
