"""The benchmark scripts' own helpers: the order and summary of repeated runs, AllenNLP's lazy import."""
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield
    for name in [m for m in sys.modules if m == "allennlp" or m.startswith("allennlp.")]:
        del sys.modules[name]


def test_rounds_alternate_the_libraries_and_ratios_are_medians_of_each_rounds_ratio(benchmarks, monkeypatch):
    import vs_original
    order, seconds = [], {("original", 25): [30.0, 10.0, 12.0], ("bilm", 25): [10.0, 9.0, 6.0],
                          ("original", 100): [60.0, 20.0, 40.0], ("bilm", 100): [20.0, 10.0, 10.0]}

    def fake_run(name, log_dir, tag="", **kwargs):
        key = (kwargs["library"], kwargs["n"])
        order.append(key)
        return {"seconds": seconds[key][order.count(key) - 1], "tokens": kwargs["n"] * 640, "peak_gb": 1.0}

    monkeypatch.setattr(vs_original, "run", fake_run)
    jobs = {(library, n): ("job", {"library": library, "n": n}) for n in (25, 100) for library in ("original", "bilm")}
    runs = vs_original.in_rounds(jobs, 3, "logs")
    assert order == [("original", 25), ("bilm", 25), ("original", 100), ("bilm", 100)] * 3
    assert [r["seconds"] for r in runs["bilm", 100]] == [20.0, 10.0, 10.0]

    ours = vs_original.figures(runs["bilm", 25], runs["bilm", 100])
    theirs = vs_original.figures(runs["original", 25], runs["original", 100])
    assert vs_original.median(ours["small"]) == 9.0 and vs_original.median(theirs["small"]) == 12.0
    ratios = vs_original.comparison(ours, theirs)
    assert ratios["small"] == pytest.approx([3.0, 10 / 9, 2.0])
    # the median of the rounds' ratios (2.00x), not the ratio of the medians (12 / 9 = 1.33x)
    assert vs_original.ratio_cell(ratios["small"]) == "2.00x"
    # steady rate: 75 batches' tokens over each round's difference of the two whole calls
    assert ours["steady"] == pytest.approx([75 * 640 / 10.0, 75 * 640 / 1.0, 75 * 640 / 4.0])
    assert ratios["steady"] == pytest.approx([30 / 10, 10 / 1, 28 / 4])
    assert vs_original.ratio_cell(ratios["steady"]) == "7.00x"


def test_allennlp_is_imported_without_running_its_package_inits(benchmarks, tmp_path):
    package = tmp_path / "allennlp"
    for directory, init in [("", "import a_library_that_is_not_installed\n"),
                            ("common", "import a_library_that_is_not_installed\n"
                                       "from allennlp.common.checks import ConfigurationError as Error\n"),
                            ("modules", "import a_library_that_is_not_installed\n"), ("nn", "")]:
        (package / directory).mkdir(parents=True, exist_ok=True)
        (package / directory / "__init__.py").write_text(init)
    (package / "common" / "checks.py").write_text("class ConfigurationError(Exception):\n    pass\n")
    (package / "modules" / "elmo.py").write_text("from allennlp.common import Error\n")
    (package / "nn" / "util.py").write_text("")
    import allennlp_elmo
    elmo, nn_util = allennlp_elmo.import_elmo(tmp_path)
    assert elmo.Error.__name__ == "ConfigurationError"
    assert elmo.__file__ == str(package / "modules" / "elmo.py") and nn_util.__file__ == str(package / "nn" / "util.py")
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        sys.modules["allennlp.common"].Missing


def test_the_dump_work_counts_real_positions_and_each_batchs_distinct_tokens(benchmarks, tmp_path):
    import json

    import vs_original
    options = {"char_cnn": {"embedding": {"dim": 2}, "max_characters_per_token": 5, "filters": [[1, 4]],
                            "n_highway": 1},
               "lstm": {"dim": 8, "projection_dim": 4, "n_layers": 1}}
    (tmp_path / "options.json").write_text(json.dumps(options))
    (tmp_path / "first_2.txt").write_text("a b c\na d\n")
    work = {"dir": str(tmp_path), "options": str(tmp_path / "options.json")}
    # by hand: char CNN 2*1*2*4*5 = 80, highway 2*2*4*4 = 64, projection 2*4*4 = 32 -> 176 per distinct token;
    # LSTMs, two directions of one layer: 2 * (2*(4+4)*4*8 + 2*8*4) = 1,152 per position (begin/end included)
    one_batch = 9 * 1152 + 6 * 176  # positions 5 + 4; tokens a, b, c, d and the two markers
    two_batches = 9 * 1152 + (4 + 5) * 176  # "a d" alone ({a, d} + 2), then "a b c" ({a, b, c} + 2)
    assert vs_original.dump_work_gflop(work, 2) == pytest.approx(one_batch / 1e9)
    assert vs_original.dump_work_gflop(work, 2, batch_size=1) == pytest.approx(two_batches / 1e9)
