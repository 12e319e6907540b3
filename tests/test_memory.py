"""Peak memory follows the attention budget, not n_content x n_style."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_1024_content_and_style_in_exact_mode_peaks_below_4_gb(release):
    """One relu3_1 attention matrix alone would be 65536 x 65536 floats = 16 GiB here."""
    code = textwrap.dedent(
        f"""
        import resource, torch
        from adaattn_model.pipeline import stylize
        from adaattn_model.weights import load_encoder, load_model
        out = {str(release["out"])!r}
        encoder = load_encoder(out + "/vgg_normalised.safetensors")
        model = load_model(out + "/adaattn_official.safetensors")
        g = torch.Generator().manual_seed(0)
        content, style = torch.rand(1, 3, 1024, 1024, generator=g), torch.rand(1, 3, 1024, 1024, generator=g)
        with torch.inference_mode():
            result = stylize(model, encoder, content, style)
        assert result.shape == (1, 3, 1024, 1024) and torch.isfinite(result).all()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = int(result.stdout.strip().splitlines()[-1])
    assert peak < 4 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"


def test_freed_host_memory_is_handed_back_on_the_cpu_only(monkeypatch):
    import torch

    from adaattn_model import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "_malloc_trim", lambda: calls.append)
    host_memory.return_freed_memory(torch.device("cuda"))
    host_memory.return_freed_memory(torch.device("mps"))
    assert calls == []
    host_memory.return_freed_memory(torch.device("cpu"))
    assert calls == [0]
