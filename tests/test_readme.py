"""The README's tour runs as written: every bash and python block, in order, in an empty directory."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR_HEADING = "## A five-minute tour"


def tour_blocks(readme=ROOT / "README.md"):
    """[(language, code)] of the fenced blocks of the tour section, in order."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(TOUR_HEADING)
    end = text.index("\n## ", start + len(TOUR_HEADING))
    return re.findall(r"```(bash|python)\n(.*?)```", text[start:end], flags=re.S)


def test_the_tour_has_every_kind_of_step():
    blocks = tour_blocks()
    commands = " ".join(code for _, code in blocks)
    assert [language for language, _ in blocks].count("python") >= 2
    assert all(re.search(r"^print\(.*\)\s+# ", code, flags=re.M) for language, code in blocks if language == "python")
    for step in ("bilm embed", "bilm sample-corpus", "bilm train", "bilm test", "bilm dump-weights", "bilm export"):
        assert step in commands


def test_the_tour_runs_verbatim(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    for k, (language, code) in enumerate(tour_blocks()):
        if language == "bash":
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        else:
            script = tmp_path / f"block_{k}.py"
            script.write_text(code, encoding="utf-8")
            command = [sys.executable, str(script)]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"block {k} failed:\n{code}\n{result.stderr[-3000:]}"
        if k == 0:
            assert "(3, 6, 256)" in result.stdout  # the second line's dataset
        if language == "python":  # what each print's comment says it prints
            for expected in re.findall(r"^print\(.*\)\s+# (.+)$", code, flags=re.M):
                assert expected in result.stdout, f"block {k}: {expected} not printed:\n{result.stdout}"
    assert (tmp_path / "mine.hdf5").is_file() and (tmp_path / "elmo_savedmodel" / "saved_model.pb").is_file()


def test_the_two_worker_cluster_block_runs_verbatim(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Training across machines")
    block, = [code for language, code in re.findall(r"```(bash|python)\n(.*?)```", text[start:], flags=re.S)
              if "--worker_index" in code][:1]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "cluster_demo" / "ckpt"
    assert (ckpt / "checkpoint").is_file() and (ckpt / "options.json").is_file()
    assert "worker 1 of 2" in result.stderr and "worker 0 of 2" in result.stderr  # both logged their rate


def test_no_install_command_can_fetch_the_unrelated_bilm_of_the_package_index():
    """The index's `bilm` is another (2018) package: installs name the clone ('.[extra]') or other packages."""
    texts = {path: path.read_text(encoding="utf-8") for path in
             [ROOT / "README.md", ROOT / "Dockerfile", *sorted((ROOT / "bilm").glob("*.py"))]}
    found = [f"{path.name}: {match}" for path, text in texts.items()
             for match in re.findall(r"pip install\s+(?:-\S+\s+)*['\"]?bilm\b\S*", text)]
    assert found == []
    assert "pip install '.[tokenize]'" in texts[ROOT / "README.md"]
