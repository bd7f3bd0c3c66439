"""The zoo conversion benchmark: its ratios and verdicts on made-up runs, and one real run on the smallest model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter.bench import litert, zoo_convert
from converter.bench.proc import GIB
from converter.bench.zoo_convert import LITERT, OURS, PARITY, RAW, Measurement, summarise, to_markdown


def _m(candidate: str, wall: float, k: int = 0, rss_gib: float = 1.0, error: str = "") -> Measurement:
    return Measurement("net", k, candidate, 2 if error else 0, wall, wall, int(rss_gib * GIB), int(rss_gib * GIB),
                       error)


def _verdicts(result: dict, model: str = "net") -> dict[str, dict]:
    return {v["target"]: v for v in result["models"][model]["verdicts"]}


def test_every_target_met() -> None:
    """Ours 10 s vs litert-torch 20 s (0.5x), parity +30 %, 1.2 GiB against peers' 1.0 GiB (1.2x): all met."""
    result = summarise([_m(OURS, 10, rss_gib=1.1), _m(PARITY, 13, rss_gib=1.2), _m(RAW, 5, rss_gib=0.6),
                        _m(LITERT, 20, rss_gib=1.0)], ["net"])
    v = _verdicts(result)
    assert v["ours_vs_litert"]["value"] == pytest.approx(0.5) and v["ours_vs_litert"]["met"]
    assert v["parity_overhead"]["value"] == pytest.approx(0.3) and v["parity_overhead"]["met"]
    assert v["rss_vs_peers"]["value"] == pytest.approx(1.2) and v["rss_vs_peers"]["met"]
    assert all(x["met"] for x in v.values())
    assert result["totals"]["ours_vs_litert"] == {"met": 1, "missed": [], "unmeasured": []}


def test_missed_targets_say_by_how_much() -> None:
    """Slower than litert-torch, over 120 s, parity +60 %, 3 GiB (2x the peers, over 2.5 GiB): every verdict fails."""
    result = summarise([_m(OURS, 150, rss_gib=2.0), _m(PARITY, 240, rss_gib=3.0), _m(RAW, 60, rss_gib=1.5),
                        _m(LITERT, 100, rss_gib=1.2)], ["net"])
    v = _verdicts(result)
    assert [x["met"] for x in v.values()] == [False] * 5
    assert v["ours_vs_litert"]["why"] == "1.50x > 1x" and v["ours_abs_s"]["why"] == "150.00 s > 120 s"
    assert v["rss_vs_peers"]["value"] == pytest.approx(2.0) and v["rss_gib"]["value"] == pytest.approx(3.0)
    assert result["totals"]["parity_overhead"]["missed"] == ["net"]
    assert "ours/litert MISS" in to_markdown(result)


def test_ratios_pair_rounds_and_skip_failed_ones() -> None:
    """The machine drifts from 10 to 20 s between rounds and both sides with it: the paired ratio stays 0.8x,
    where the ratio of medians would not; a round whose litert-torch run failed has no pair."""
    runs = [_m(OURS, 8, 0), _m(LITERT, 10, 0), _m(OURS, 16, 1), _m(LITERT, 20, 1), _m(OURS, 16, 2),
            _m(LITERT, 0.5, 2, error="litert_child: boom"), _m(PARITY, 9, 0), _m(RAW, 4, 0)]
    row = summarise(runs, ["net"])["models"]["net"]
    assert row["ours_vs_litert"] == pytest.approx(0.8)
    assert row["candidates"][LITERT]["failures"] == 1 and row["candidates"][LITERT]["wall_s_median"] == 15
    assert row["parity_overhead"] == pytest.approx(9 / 8 - 1)  # the only round with both


def test_a_failed_peer_is_a_cell_not_a_crash(tmp_path: Path) -> None:
    """litert-torch fails on the model and onnx2tf had no ONNX: their cells carry the reasons; the verdicts that
    need them are 'not measured' (None) naming the failure; the rest are still judged; the plot is drawn."""
    runs = [_m(OURS, 10), _m(PARITY, 12), Measurement("net", 0, RAW, None, error="no ONNX: seed failed"),
            _m(LITERT, 3, error="litert_child: RuntimeError: Node meta_0_weight | bad")]
    result = summarise(runs, ["net"], rounds=1)
    v = _verdicts(result)
    assert v["ours_vs_litert"]["met"] is None and "meta_0_weight" in v["ours_vs_litert"]["why"]
    assert v["rss_vs_peers"]["met"] is None and v["ours_abs_s"]["met"] and v["parity_overhead"]["met"]
    assert result["totals"]["ours_vs_litert"]["unmeasured"] == ["net"]
    row = next(line for line in to_markdown(result).splitlines() if line.startswith("| net "))
    assert "failed: litert_child: RuntimeError: Node meta_0_weight / bad" in row  # a '|' would break the table
    assert "failed: no ONNX" in row and "ours/litert n/a" in row
    json.dumps(result)
    zoo_convert.plot(result, tmp_path / "times.png")
    assert (tmp_path / "times.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("ours_gib", "met"), [(1.4, True), (2.0, None)])
def test_rss_against_one_peer_when_the_other_failed(ours_gib: float, met: bool | None) -> None:
    """litert-torch failed, onnx2tf peaked at 1 GiB: the larger peer peak is at least 1 GiB, so 1.4 GiB is within
    1.5x of it whatever litert-torch would have used; 2 GiB cannot be judged (and says against what it was 2x)."""
    runs = [_m(OURS, 10, rss_gib=ours_gib), _m(PARITY, 12, rss_gib=1.0), _m(RAW, 5, rss_gib=1.0),
            _m(LITERT, 3, error="litert_child: ValueError: no")]
    verdict = _verdicts(summarise(runs, ["net"]))["rss_vs_peers"]
    assert verdict["met"] is met and verdict["value"] == pytest.approx(ours_gib)
    if met is None:
        assert verdict["why"] == "litert_torch: litert_child: ValueError: no (against the other peer alone: 2.00x)"


def test_litert_venv_unbuildable_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(litert.shutil, "which", lambda name: None)
    with pytest.raises(litert.LitertUnavailable, match="python3.11 is not on PATH") as info:
        litert.ensure_venv(tmp_path / "venv", log=lambda m: None)
    assert "\n" not in str(info.value) and not litert.is_ready(tmp_path / "venv")


def test_litert_command_is_self_contained() -> None:
    argv = litert.litert_command(Path("/v/bin/python"), "small_unet", Path("/o/m.tflite"))
    assert argv[0] == "/v/bin/python" and argv[-2:] == ["small_unet", "/o/m.tflite"]
    assert Path(argv[2]).is_file() and Path(argv[2]).name == "litert_child.py"


# ------------------------------------------------------------------------------------- one real run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict:
    """``two_in_two_out``, one round, every candidate: litert-torch when its venv is there (a test never builds it:
    minutes and ~3 GB), otherwise reported unavailable."""
    with pytest.MonkeyPatch.context() as patch:
        if not litert.is_ready():
            patch.setattr(zoo_convert, "ensure_venv", _unavailable)
        cfg = zoo_convert.ZooBenchConfig(models=("two_in_two_out",), workdir=tmp_path_factory.mktemp("bench-zoo"))
        result = zoo_convert.run(cfg, log=lambda m: None)
    json.dumps(result)  # the JSON the script writes
    return result


def _unavailable(root: Path, log) -> Path:
    raise litert.LitertUnavailable(f"no venv at {root} (test)")


@pytest.mark.slow
def test_real_run_ours_and_onnx2tf(real_run: dict) -> None:
    row = real_run["models"]["two_in_two_out"]
    cands = row["candidates"]
    for name in (OURS, PARITY, RAW):
        assert cands[name]["failures"] == 0, f"{name}: {cands[name]['error']}"
        assert 0 < cands[name]["wall_s_median"] < 600 and 0.1 < cands[name]["peak_rss_gib"] < 8
    ours = [m for m in real_run["measurements"] if m["candidate"] in (OURS, PARITY)]
    assert all(m["detail"]["timings_s"]["total"] > 0 for m in ours)
    assert next(m for m in ours if m["candidate"] == PARITY)["detail"]["parity_passed"] is True
    assert row["parity_overhead"] is not None and row["rss_ours_gib"] is not None
    assert real_run["seeds"]["two_in_two_out"]["onnx"]
    assert "| two_in_two_out |" in to_markdown(real_run)


@pytest.mark.slow
def test_real_run_litert(real_run: dict) -> None:
    """litert-torch ran as its own process: a time, or (it fails on this model's ``meta`` submodule, litert-torch
    0.10) its child's one-line reason, in which case the ratio is 'not measured'."""
    if not litert.is_ready():
        pytest.skip(f"no litert-torch venv at {litert.DEFAULT_VENV} (build it: scripts/bench_convert --zoo does)")
    row = real_run["models"]["two_in_two_out"]
    (run,) = [m for m in real_run["measurements"] if m["candidate"] == LITERT]
    assert run["returncode"] is not None
    if run["returncode"] == 0:
        assert row["ours_vs_litert"] is not None and row["candidates"][LITERT]["peak_rss_gib"] > 0.1
    else:
        assert run["error"].startswith("litert_child: ") and "\n" not in run["error"]
        assert _verdicts(real_run, "two_in_two_out")["ours_vs_litert"]["met"] is None
