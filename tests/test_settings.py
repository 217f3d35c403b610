"""Settings: flags/env vars through Snakemake's own plugin registry, fallbacks, and one-line errors."""

from __future__ import annotations

import argparse

import pytest
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

from snakemake_executor_plugin_azbatch.config import AppPackage, SettingsError, account_name_from_url, resolve
from snakemake_executor_plugin_azbatch.settings.executor_settings import ExecutorSettings

pytestmark = pytest.mark.quick

KEY = "a2V5LWtleS1rZXk="  # base64 of 'key-key-key'
BASE_ENV = {
    "SNAKEMAKE_AZBATCH_ACCOUNT_URL": "https://mybatch.westeurope.batch.azure.com",
    "SNAKEMAKE_AZBATCH_POOL_ID": "pool1",
    "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=" + KEY,
}


def resolve_env(env: dict, **settings):
    return resolve(ExecutorSettings(**settings), env)


def test_every_setting_has_help_a_flag_and_an_env_var():
    plugin = ExecutorPluginRegistry().get_plugin("azbatch")
    infos = plugin.get_settings_info()
    assert infos and all(info["help"] for info in infos)
    names = {info["name"] for info in infos}
    assert {"account_url", "account_name", "account_key", "pool_id", "storage_account_url", "storage_account_key",
            "storage_connection_string", "storage_container", "storage_prefix", "keep_job", "container_image",
            "application_packages", "resource_files", "precommand", "bootstrap", "mounted_paths",
            "managed_identity"} <= names
    for info in infos:
        assert info["cliarg"] == "--azbatch-" + info["name"].replace("_", "-")
        assert info["env_var"] == "SNAKEMAKE_AZBATCH_" + info["name"].upper()
    pool = next(i for i in infos if i["name"] == "pool_id")
    assert pool["required"]


def test_flags_parse_through_snakemakes_argument_parser():
    plugin = ExecutorPluginRegistry().get_plugin("azbatch")
    parser = argparse.ArgumentParser()
    try:
        plugin.register_cli_args(parser, "executor")
    except TypeError:  # plain argparse has no env_var=; Snakemake uses configargparse
        import configargparse

        parser = configargparse.ArgumentParser()
        plugin.register_cli_args(parser, "executor")
    args = parser.parse_args(
        ["--azbatch-pool-id", "p", "--azbatch-application-packages", "tools:1.0", "python", "--azbatch-keep-job"]
    )
    settings = plugin.get_settings(args)
    assert settings.pool_id == "p"
    assert settings.application_packages == ["tools:1.0", "python"]
    assert settings.keep_job is True


def test_environment_and_defaults():
    config = resolve_env(BASE_ENV)
    assert config.account.url == "https://mybatch.westeurope.batch.azure.com"
    assert config.account.name == "mybatch"  # derived from the URL
    assert config.account.key is None  # → Entra ID
    assert config.account.pool_id == "pool1"
    assert config.storage.container == "snakemake-azbatch"
    assert config.storage.prefix == ""
    assert config.software.bootstrap == "pip"
    assert config.keep.job is False


def test_explicit_settings_win_over_the_environment():
    config = resolve_env(BASE_ENV, pool_id="other", storage_prefix="/proj/x/")
    assert config.account.pool_id == "other"
    assert config.storage.prefix == "proj/x/"


def test_azure_cli_variables_are_fallbacks():
    env = {
        "AZURE_BATCH_ENDPOINT": "https://acct.eastus.batch.azure.com",
        "AZURE_BATCH_ACCOUNT": "acct",
        "AZURE_BATCH_ACCESS_KEY": KEY,
        "AZURE_STORAGE_CONNECTION_STRING": BASE_ENV["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"],
        "SNAKEMAKE_AZBATCH_POOL_ID": "p",
    }
    config = resolve_env(env)
    assert (config.account.url, config.account.name, config.account.key) == (
        "https://acct.eastus.batch.azure.com", "acct", KEY)
    assert config.storage.connection_string == env["AZURE_STORAGE_CONNECTION_STRING"]
    # The plugin's own variable beats the CLI's.
    assert resolve_env({**env, "SNAKEMAKE_AZBATCH_ACCOUNT_NAME": "mine"}).account.name == "mine"


def test_lists_bootstrap_and_paths(tmp_path):
    local = tmp_path / "ref.fa"
    local.write_text(">x\n")
    config = resolve_env(
        BASE_ENV,
        application_packages=["tools:1.0,python", "samtools:1.19.2"],
        resource_files=[str(local), f"refs/g.fa={local}", "data/x.txt=https://h/c/x.txt?sv=1&sig=abc%3D"],
        mounted_paths=["/mnt/data/"],
    )
    assert config.software.application_packages == (AppPackage("tools", "1.0"), AppPackage("python", None), AppPackage("samtools", "1.19.2"))
    assert config.software.bootstrap == "app-package"
    assert [(r.source, r.node_path) for r in config.files.resource_files] == [
        (str(local), "ref.fa"),
        (str(local), "refs/g.fa"),
        ("https://h/c/x.txt?sv=1&sig=abc%3D", "data/x.txt"),
    ]
    assert config.files.mounted_paths == ("/mnt/data",)
    assert resolve_env(BASE_ENV, container_image="python:3.11").software.bootstrap == "container"
    assert resolve_env(BASE_ENV, container_image="img", bootstrap="pip").software.bootstrap == "pip"


@pytest.mark.parametrize(
    "env_change, settings, fragment",
    [
        ({"SNAKEMAKE_AZBATCH_ACCOUNT_URL": None}, {}, "--azbatch-account-url"),
        ({"SNAKEMAKE_AZBATCH_ACCOUNT_URL": "mybatch.westeurope"}, {}, "--azbatch-account-url"),
        ({"SNAKEMAKE_AZBATCH_POOL_ID": None}, {}, "--azbatch-pool-id"),
        ({"SNAKEMAKE_AZBATCH_POOL_ID": "bad pool!"}, {}, "--azbatch-pool-id"),
        ({"SNAKEMAKE_AZBATCH_ACCOUNT_KEY": "not base64!!"}, {}, "--azbatch-account-key"),
        ({"SNAKEMAKE_AZBATCH_ACCOUNT_URL": "http://127.0.0.1:9999", "SNAKEMAKE_AZBATCH_ACCOUNT_KEY": KEY}, {},
         "--azbatch-account-name"),
        ({"SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": None}, {}, "--azbatch-storage-account-url"),
        ({"SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": "garbage"}, {}, "--azbatch-storage-connection-string"),
        ({"SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY": KEY}, {}, "--azbatch-storage-account-url"),
        ({}, {"storage_container": "Bad_Container"}, "--azbatch-storage-container"),
        ({}, {"application_packages": ["tools:1.0:extra"]}, "--azbatch-application-packages"),
        ({}, {"resource_files": ["/no/such/file"]}, "--azbatch-resource-files"),
        ({}, {"resource_files": ["../up=https://h/x"]}, "--azbatch-resource-files"),
        ({}, {"mounted_paths": ["relative/path"]}, "--azbatch-mounted-paths"),
        ({}, {"bootstrap": "container"}, "--azbatch-container-image"),
        ({}, {"bootstrap": "app-package"}, "--azbatch-application-packages"),
        ({}, {"bootstrap": "magic"}, "--azbatch-bootstrap"),
        ({"SNAKEMAKE_AZBATCH_SAS_HOURS": "0"}, {}, "--azbatch-sas-hours"),
        ({"SNAKEMAKE_AZBATCH_UPLOAD_CONCURRENCY": "many"}, {}, "--azbatch-upload-concurrency"),
        ({"SNAKEMAKE_AZBATCH_HEARTBEAT_INTERVAL": "600", "SNAKEMAKE_AZBATCH_HEARTBEAT_STALE": "900"}, {},
         "--azbatch-heartbeat-stale"),
    ],
)
def test_bad_settings_give_one_line_naming_the_setting(env_change, settings, fragment):
    env = {k: v for k, v in {**BASE_ENV, **env_change}.items() if v is not None}
    with pytest.raises(SettingsError) as info:
        resolve_env(env, **settings)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert KEY not in message


def test_secrets_never_appear_in_errors():
    env = {**BASE_ENV, "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": "AccountKey=" + KEY + ";nothing-else",
           "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": "X"}
    with pytest.raises(SettingsError) as info:
        resolve_env(env)
    assert KEY not in str(info.value)


def test_account_name_from_url():
    assert account_name_from_url("https://mybatch.westeurope.batch.azure.com") == "mybatch"
    assert account_name_from_url("http://127.0.0.1:8080") is None
    assert account_name_from_url("http://localhost:8080") is None


def test_sas_signatures_are_redacted_from_messages():
    from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import redact

    text = "upload to http://h/c/blob?sv=2024&sp=r&sig=abc%2Bdef%3D&se=x failed; also 'sig=zzz'"
    assert redact(text) == "upload to http://h/c/blob?sv=2024&sp=r&sig=REDACTED&se=x failed; also 'sig=REDACTED'"


def test_a_scheme_less_endpoint_from_the_azure_cli_variable_gets_https():
    """`az batch account show --query accountEndpoint -o tsv` prints the host only; the Azure CLI accepts that in
    AZURE_BATCH_ENDPOINT and adds https://, so the plugin does the same for that variable."""
    env = {**BASE_ENV, "AZURE_BATCH_ENDPOINT": "acct.eastus.batch.azure.com"}
    del env["SNAKEMAKE_AZBATCH_ACCOUNT_URL"]
    config = resolve_env(env)
    assert config.account.url == "https://acct.eastus.batch.azure.com"
    assert config.account.name == "acct"


def test_the_plugins_own_url_setting_still_needs_a_scheme_and_says_so():
    env = {**BASE_ENV, "SNAKEMAKE_AZBATCH_ACCOUNT_URL": "acct.eastus.batch.azure.com"}
    with pytest.raises(SettingsError) as info:
        resolve_env(env)
    assert "(add https:// in front)" in str(info.value) and "--azbatch-account-url" in str(info.value)


ENTRA_ENV = {
    "SNAKEMAKE_AZBATCH_ACCOUNT_URL": "https://mybatch.westeurope.batch.azure.com",
    "SNAKEMAKE_AZBATCH_POOL_ID": "pool1",
    "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL": "https://st.blob.core.windows.net",
}


def test_sas_lifetime_beyond_seven_days_is_refused_up_front_with_entra_id():
    assert resolve_env(ENTRA_ENV, sas_hours=168).links.sas_hours == 168
    with pytest.raises(SettingsError) as info:
        resolve_env(ENTRA_ENV, sas_hours=169)
    message = str(info.value)
    assert "--azbatch-sas-hours" in message and "168 hours" in message and "\n" not in message


@pytest.mark.parametrize(
    "extra",
    [
        {"SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY": KEY},
        {"SNAKEMAKE_AZBATCH_MANAGED_IDENTITY": "/subscriptions/s/resourceGroups/g/providers/x/id"},
        {"SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": BASE_ENV["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"]},
    ],
    ids=["account-key", "managed-identity", "connection-string"],
)
def test_long_sas_lifetimes_are_fine_without_user_delegation(extra):
    assert resolve_env({**ENTRA_ENV, **extra}, sas_hours=24 * 30).links.sas_hours == 720


def test_help_states_every_settings_default_derived_from_the_dataclass():
    """`snakemake --help` (Snakemake's own argument parser for the plugin) ends every setting's help with its
    default: the field's value itself, or for an unset (None) one what unset means; required ones say so."""
    import dataclasses

    import configargparse

    parser = configargparse.ArgumentParser()
    ExecutorPluginRegistry().get_plugin("azbatch").register_cli_args(parser, "executor")
    helps = {a.dest: a.help for a in parser._actions if a.dest.startswith("azbatch_")}
    fields = dataclasses.fields(ExecutorSettings)
    assert len(helps) == len(fields)
    for f in fields:
        text = helps["azbatch_" + f.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.metadata.get("required"):
            expected = "Required."
        elif isinstance(default, bool):
            expected = f"Default: {'on' if default else 'off'}."
        elif default is None:
            expected = f"Default: {f.metadata.get('unset', 'none')}."
        elif default in ("", []):
            expected = "Default: none."
        else:
            expected = f"Default: {default:g}." if isinstance(default, float) else f"Default: {default}."
        assert text.endswith(expected), f"--azbatch-{f.name.replace('_', '-')}: help {text!r} lacks {expected!r}"
        assert text.count("Default:") + text.count("Required.") == 1 and "default:" not in text.lower().replace("default:", "", 1), text
