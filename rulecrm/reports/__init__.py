"""The HTML reports of `replay --report` and `diff --report`: one self-contained page of figures computed
from the actions a command wrote (docs/cli.md, "HTML reports").

`collect.ActionLog` keeps a replay's action lines as they are written, `data` turns them into the
page's figures, `html` renders the page from `report.html`, and `writing` puts it on disk.
"""
