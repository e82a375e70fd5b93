"""The HTML reports of `replay --report` and `diff --report`: one self-contained page of figures computed
from the actions a command wrote (docs/cli.md, "HTML reports").

`collect.ActionLog` keeps a replay's action lines as `--out` gets them, `data` computes the figures
from them, `tables` lays the figures out side by side (one side, or a diff's old and new), `html`
renders the page from `report.html` with Chart.js inline, `pages` puts a replay's or a diff's page
together, and `writing` checks the path first and writes the page whole.
"""
