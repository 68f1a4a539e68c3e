"""Through HTTP, a Criteo row sent as an event is learned exactly as ``ctr train`` learns
the TSV: the same keys, the same predictions to the last bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datagen import criteo_lines
from service_helpers import criteo_events, running_app

from ftrl_core.metrics import logloss
from service.cli import main
from service.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("flags", [{}, {"alpha": 0.2, "l1": 0.5, "hash_bits": 18}])
async def test_http_predictions_equal_ctr_train(tmp_path: Path, flags: dict[str, float]
                                                ) -> None:
    lines = criteo_lines(3000, seed=11)
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    preds = tmp_path / "p.txt"
    cli_flags = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["train", str(tsv), "--quiet", "--predictions-out", str(preds),
                 "--model-out", str(tmp_path / "m.ctr"), *cli_flags]) == 0
    expected = [float(x) for x in preds.read_text().split()]

    events = criteo_events(lines)
    got: list[float] = []
    async with running_app(Settings(**flags)) as client:  # type: ignore[arg-type]
        for i in range(0, len(events), 1000):
            r = await client.post("/v1/train", json={"events": events[i:i + 1000]})
            got += r.json()["p"]
        info = (await client.get("/v1/model")).json()
    assert got == expected  # bit for bit, through JSON both ways
    y = np.array([e["label"] for e in events])
    assert info["logloss"] == pytest.approx(logloss(y, np.array(expected)), abs=1e-12)
