"""A pytest helper so a user's test suite can gate on parity.

    from converter.testing import assert_parity

    def test_my_model_converts(tmp_path):
        assert_parity("mypkg.nets:build", tmp_path / "out", input_shapes=[(1, 3, 64, 64)])

It converts (or, with ``check_only=True``, re-checks an existing directory) and fails with the report's
table when any runtime is out of tolerance.
"""

from __future__ import annotations

from pathlib import Path

from converter import api
from converter.options import ConvertOptions
from converter.parity.judge import ParityReport
from converter._convert.sources import LoadedModel, load_model


def assert_parity(
    model: str | LoadedModel,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    input_shapes: list[tuple[int, ...]] | None = None,
    parity_data: str = "random",
    options: ConvertOptions | None = None,
    check_only: bool = False,
    force: bool = True,
) -> ParityReport:
    """Convert ``model`` into ``out_dir`` (or re-check it) and raise :class:`ParityFailed` on any failure."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    options = options or ConvertOptions()
    if check_only:
        result = api.check(loaded, out_dir, options, parity_data=parity_data)
    else:
        result = api.convert(loaded, out_dir=out_dir, options=options, input_shapes=input_shapes, parity_data=parity_data, force=force)
    report = result.parity
    if report is None:
        raise ValueError("assert_parity needs options.parity=True")
    return report.raise_if_failed()  # ParityFailed: every failing row in one line, the table as its note
