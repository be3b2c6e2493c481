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


def test_readme_walkthrough_runs_verbatim(tmp_path, monkeypatch, capsys):
    # Catches: the README's define -> meta-train -> save -> load -> adapt -> roll out -> plot
    # walkthrough drifting from the API (renamed arguments, changed shapes, a run folder that
    # no longer reloads without settings).
    text = README.read_text()
    marker = text.index("<!-- walkthrough")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SP_DYNAMICS_CACHE", str(tmp_path / "cache"))
    from sp_dynamics import unregister_system

    try:
        exec(compile(block, str(README), "exec"), {"__name__": "__walkthrough__"})
    finally:
        unregister_system("anharmonic")
    err = float(re.search(r"eps_traj on the new instance \(k = \S+\): (\S+)", capsys.readouterr().out).group(1))
    assert err < 0.2  # a trained, adapted model (an untrained one is at ~1)
    assert (tmp_path / "anharmonic.png").exists() and (tmp_path / "runs" / "anharmonic" / "model" / "model.json").exists()
