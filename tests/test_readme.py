"""The README quickstart, run verbatim (catches docs drifting from the code)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs_verbatim(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    marker = text.index("<!-- quickstart")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "__quickstart__"})
    out = capsys.readouterr().out
    drift = float(re.search(r"learned-energy drift over 100 steps (\S+)", out).group(1))
    residuals = [float(v) for v in re.search(r"degeneracy residuals (\S+), (\S+)", out).groups()]
    assert drift < 1e-10
    assert max(residuals) < 1e-10
