"""Which SNAKEMAKE_AZBATCH_* variables hide a profile value: found by parsing the command line again with
Snakemake's own parser (in process)."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.settings.profile_overrides import override_warnings, overridden_profile_keys

pytestmark = pytest.mark.quick


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    (tmp_path / "Snakefile").write_text('rule a:\n    output: "a"\n    shell: "touch {output}"\n')
    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "profile.yaml").write_text(
        "executor: azbatch\nazbatch-pool-id: frompool\nazbatch-storage-prefix: fromprofile\n"
    )
    return "prof"


def test_a_variable_that_hides_a_profile_key_is_found(profile):
    env = {"SNAKEMAKE_AZBATCH_STORAGE_PREFIX": "fromenv", "SNAKEMAKE_AZBATCH_ACCOUNT_URL": "https://a.batch.azure.com"}
    found = overridden_profile_keys(["--profile", profile], env)
    assert found == [("SNAKEMAKE_AZBATCH_STORAGE_PREFIX", "azbatch-storage-prefix", "prof/profile.yaml")]
    (warning,) = override_warnings(["--profile", profile], env)
    assert warning.startswith("azbatch: environment variable SNAKEMAKE_AZBATCH_STORAGE_PREFIX overrides")
    assert "fromenv" not in warning  # values (possibly secrets) are never shown


def test_a_flag_on_the_command_line_beats_both_and_nothing_is_reported(profile):
    env = {"SNAKEMAKE_AZBATCH_STORAGE_PREFIX": "fromenv"}
    assert overridden_profile_keys(["--profile", profile, "--azbatch-storage-prefix", "cli"], env) == []


def test_no_plugin_variable_or_no_profile_means_nothing_to_report(profile):
    assert overridden_profile_keys(["--profile", profile], {"PATH": "/usr/bin"}) == []
    assert overridden_profile_keys([], {"SNAKEMAKE_AZBATCH_POOL_ID": "p"}) == []


def test_api_use_and_unparsable_command_lines_report_nothing(profile):
    assert override_warnings(None, {"SNAKEMAKE_AZBATCH_POOL_ID": "p"}) == []
    assert override_warnings(["--profile", "no-such-profile"], {"SNAKEMAKE_AZBATCH_POOL_ID": "p"}) == []
