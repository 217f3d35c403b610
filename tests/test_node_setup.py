"""What the nodes get: the preparation task's parts, the task prefix, the node-wide conda/apptainer prefixes, the
checks before submitting, and the install-once-per-node logic run for real in bash (fake installers, flock)."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from snakemake_executor_plugin_azbatch.pools.pool_info import PoolInfo
from snakemake_executor_plugin_azbatch.bootstrap import node_script
from snakemake_executor_plugin_azbatch.config import SettingsError, resolve
from snakemake_executor_plugin_azbatch.node_software.marketplace_python import image_python
from snakemake_executor_plugin_azbatch.run.node_setup import NodeSetup, StagedFiles
from snakemake_executor_plugin_azbatch.settings.executor_settings import ExecutorSettings
from snakemake_executor_plugin_azbatch.staging import node_commands
from snakemake_executor_plugin_azbatch.staging.node_helper import READ_URL_VARIABLE

KEY = "a2V5"
UBUNTU_22 = ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts")
UBUNTU_24 = ("canonical", "ubuntu-24_04-lts", "server")


def config(**settings):
    base = {"account_url": "https://acct.westeurope.batch.azure.com", "account_key": KEY, "pool_id": "p",
            "storage_account_url": "https://st.blob.core.windows.net", "storage_account_key": KEY}
    return resolve(ExecutorSettings(**{**base, **settings}), environ={})


def pool(image=UBUNTU_24, containers=False) -> PoolInfo:
    return PoolInfo("p", 2, 1, 0, 1, False, (), containers, image=image)


def setup(methods=(), staged=None, fetched=True, **settings) -> NodeSetup:
    """`fetched`: staged files reach the node through a manifest the script fetches from (the executor's way with a
    SAS); else as resource files (its way with a managed identity)."""

    def stage(pairs):
        if staged is not None:
            staged.extend(pairs)
        if not fetched:
            return StagedFiles([{"httpUrl": f"https://blob/{Path(local).name}", "filePath": node}
                                for local, node in pairs])
        digest = hashlib.sha256(repr(pairs).encode()).hexdigest()
        manifest = {"httpUrl": f"https://blob/{digest}", "filePath": node_commands.manifest_file_path(digest)}
        return StagedFiles([manifest], digest, {READ_URL_VARIABLE: "https://blob/c?sv=x&sig=y"})

    fake_cache = Path(__file__).parent / "no-such-cache"
    return NodeSetup(config(**settings), frozenset(methods), "9.1.0", stage=stage, cache=fake_cache)


@pytest.fixture
def no_downloads(monkeypatch, tmp_path):
    """The submitting machine's files, without pip: a fake uv wheel and wheelhouse."""
    from snakemake_executor_plugin_azbatch.node_software import wheelhouse

    wheel = tmp_path / "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"wheel")
    house = [tmp_path / "snakemake-9.1.0-py3-none-any.whl", tmp_path / "pyyaml-6.0-cp313-cp313-manylinux_2_17_x86_64.whl"]
    for path in house:
        path.write_bytes(b"x")
    calls = []
    monkeypatch.setattr(wheelhouse, "uv_version", lambda: "0.13.9")
    monkeypatch.setattr(wheelhouse, "uv_wheel", lambda cache, uv: wheel)
    monkeypatch.setattr(wheelhouse, "wheelhouse", lambda *a, **k: calls.append((a, k)) or house)
    return calls


def script_of(prep: dict) -> str:
    return shlex.split(prep["commandLine"])[2]


@pytest.mark.quick
def test_pip_mode_installs_the_runs_snakemake_with_uv_from_the_index(no_downloads):
    staged = []
    prep = setup(staged=staged).preparation_task(pool())
    script = script_of(prep)
    assert script.startswith("set -e\n")
    # Nothing staged: the node fetches the pinned uv from the index itself (it reaches the index for Snakemake
    # anyway), inside uv's install-once block, so a node that has uv downloads nothing.
    assert staged == [] and prep["resourceFiles"] == [] and "environmentSettings" not in prep
    url, sha256 = node_script.NODE_UV_WHEELS["x86_64"]
    assert f"x86_64) uv_url={url} uv_sha256={sha256};;" in script and 'case "$(uname -m)"' in script
    fetch = 'python3 -c "$AZBATCH_INDEX_FETCH" fetch "$uv_url" "$uv_sha256"'
    assert script.count(fetch) == 1
    assert script.index("uv-0.13.9/.complete") < script.index(fetch) < script.index("python3 -m zipfile -e")
    assert '/uv" venv' in script and " snakemake==9.1.0 " in script
    assert "--no-index" not in script and no_downloads == []
    # uv failing names what failed: python3 probes the index (the configured one, else PyPI).
    assert 'probe "${UV_INDEX_URL:-https://pypi.org/simple}/snakemake/"' in script
    assert "nodes without internet need" not in script
    # A python3 that already has exactly this Snakemake is used as it is; else python3 must be new enough.
    assert script.index("import sys, snakemake") < script.index("sys.version_info < (3, 11)") < script.index('/uv" venv')
    assert "flock 9" in script and script.count(".complete") >= 4


@pytest.mark.quick
def test_a_ca_bundle_is_staged_and_trusted_by_the_bootstrap_and_every_task(no_downloads, tmp_path):
    ca = tmp_path / "proxy-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    staged = []
    node_setup = setup(staged=staged, node_ca_bundle=str(ca))
    script = script_of(node_setup.preparation_task(pool()))
    assert staged == [(ca, "azbatch-ca/ca.pem")]
    bundle = node_script.ca_bundle_path(hashlib.sha256(ca.read_bytes()).hexdigest())
    exports = f"export SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle} CURL_CA_BUNDLE={bundle} PIP_CERT={bundle}"
    assert script.index(exports) < script.index('python3 -c "$AZBATCH_INDEX_FETCH" fetch')
    assert f'if [ -e "{bundle}" ]; then {exports}; fi' in node_setup.exec_prefix()
    (tmp_path / "key.txt").write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="no PEM certificate"):
        config(node_ca_bundle=str(tmp_path / "key.txt"))
    with pytest.raises(SettingsError, match="cannot read it"):
        config(node_ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="not by --azbatch-bootstrap none"):
        config(node_ca_bundle=str(ca), bootstrap="none")


def test_the_ca_part_adds_the_bundle_to_the_nodes_trust_store_once(tmp_path):
    (tmp_path / "azbatch-ca").mkdir()
    (tmp_path / "azbatch-ca" / "ca.pem").write_text("PROXY CA\n")
    part = node_script.ca_part("ab" * 32, fetch_ca="echo fetched")
    env = {"PATH": "/usr/bin:/bin", "AZ_BATCH_NODE_SHARED_DIR": str(tmp_path), "AZ_BATCH_NODE_ID": "n1"}
    script = node_script.preparation_script([part, 'echo "$SSL_CERT_FILE"'])
    runs = [subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    bundle = Path(runs[0].stdout.splitlines()[-1])
    assert runs[0].stdout.startswith("fetched\n") and "fetched" not in runs[1].stdout  # once per node
    system = next(Path(p) for p in node_script.SYSTEM_CA_BUNDLES if Path(p).exists())
    assert bundle.read_text() == system.read_text() + "PROXY CA\n"


@pytest.mark.quick
def test_offline_mode_installs_from_the_staged_wheelhouse_for_the_nodes_python(no_downloads):
    staged = []
    prep = setup(staged=staged, bootstrap="offline", node_packages=["matplotlib"]).preparation_task(pool(UBUNTU_24))
    script = script_of(prep)
    assert '--no-index --find-links "$PWD/azbatch-wheelhouse"' in script
    assert "sys.version_info[:2] != (3, 12)" in script  # Ubuntu 24.04's python3, checked on the node
    assert sorted(node for _, node in staged)[1:] == [
        "azbatch-wheelhouse/pyyaml-6.0-cp313-cp313-manylinux_2_17_x86_64.whl",
        "azbatch-wheelhouse/snakemake-9.1.0-py3-none-any.whl",
    ]
    # Two manifests: the wheelhouse is fetched inside Snakemake's install-once block, only when it installs.
    uv_manifest, wheels_manifest = (f["filePath"] for f in prep["resourceFiles"])
    assert "AZBATCH_INDEX_FETCH" not in script  # offline nodes reach no index
    target = node_script.snakemake_dir("9.1.0", ("matplotlib",))
    fetch = f'node_helper.py" fetch {wheels_manifest} || '
    assert script.index(f"{target}/.complete") < script.index(fetch) < script.index('/uv" venv')
    (args, _), = no_downloads
    assert args[1:] == ("9.1.0", "3.12", ("matplotlib",))
    # With a managed identity the files are resource files (Batch downloads them) and nothing is fetched.
    prep = setup(fetched=False, bootstrap="offline").preparation_task(pool(UBUNTU_24))
    assert len(prep["resourceFiles"]) == 3 and "environmentSettings" not in prep
    assert " fetch " not in script_of(prep)
    # Its own node-wide environment (the extra packages are part of its name), first on every task's PATH.
    assert target != node_script.snakemake_dir("9.1.0") and f'"{target}"' in script
    assert setup(bootstrap="offline", node_packages=["matplotlib"]).exec_prefix() == (
        f'if [ -e "{target}/.complete" ]; then export PATH="{target}/bin:$PATH"; fi'
    )


@pytest.mark.quick
def test_files_are_staged_once_per_run_and_other_modes_prepare_nothing(no_downloads):
    staged = []
    node_setup = setup(staged=staged, bootstrap="offline")
    first, second = node_setup.preparation_task(pool()), node_setup.preparation_task(pool())
    assert first == second and len(staged) == 3  # uv's wheel and the two wheels of the wheelhouse
    for mode in ("none", "container"):
        extra = {"container_image": "img"} if mode == "container" else {}
        assert setup(bootstrap=mode, **extra).preparation_task(pool()) is None
    assert setup(bootstrap="none").exec_prefix() == ""


@pytest.mark.quick
def test_the_preparation_task_runs_in_the_tasks_image_whenever_they_run_in_one(no_downloads):
    prep = setup(bootstrap="pip", container_image="python:3.12-slim").preparation_task(pool(containers=True))
    assert prep["containerSettings"]["imageName"] == "python:3.12-slim"
    # The container bootstrap installs nothing; the sources part still runs, with the image's python3.
    prep = setup(bootstrap="container", container_image="img").preparation_task(pool(containers=True), ["true"])
    assert prep["containerSettings"] == {"imageName": "img", "workingDirectory": "taskWorkingDirectory"}
    assert "containerSettings" not in setup(bootstrap="none").preparation_task(pool(), ["true"])


@pytest.mark.quick
def test_conda_rules_get_miniforge_once_per_node_and_a_node_wide_env_prefix(no_downloads):
    node_setup = setup(methods={"conda"}, conda_installer="https://mirror.example/Miniforge3.sh")
    script = script_of(node_setup.preparation_task(pool()))
    assert "curl -fsSL --retry 3" in script and "https://mirror.example/Miniforge3.sh" in script
    assert f'bash "{node_script.conda_dir()}.sh" -b -p "{node_script.conda_dir()}"' in script
    assert "apptainer" not in script
    assert f'"{node_script.conda_dir()}/bin:$PATH"' in node_setup.exec_prefix()
    assert node_setup.snakemake_args() == '--conda-prefix "$AZ_BATCH_NODE_SHARED_DIR/azbatch/conda-envs"'
    # Conda already on the nodes (start task or image): nothing installed, the prefix still node-wide.
    provided = setup(methods={"conda"}, node_provides=["conda"], bootstrap="none")
    provided.check([pool()])
    assert provided.preparation_task(pool()) is None
    assert provided.snakemake_args() == '--conda-prefix "$AZ_BATCH_NODE_SHARED_DIR/azbatch/conda-envs"'


@pytest.mark.quick
def test_apptainer_rules_get_apptainer_from_conda_forge_and_a_node_wide_image_prefix(no_downloads):
    node_setup = setup(methods={"apptainer"})
    script = script_of(node_setup.preparation_task(pool()))
    assert "create --quiet --yes -p" in script and "-c conda-forge apptainer" in script
    assert f'"{node_script.apptainer_dir()}/bin:$PATH"' in node_setup.exec_prefix()
    assert node_setup.snakemake_args() == '--apptainer-prefix "$AZ_BATCH_NODE_SHARED_DIR/azbatch/apptainer-images"'


@pytest.mark.parametrize(
    "methods, settings, fragment",
    [
        ({"conda"}, {"bootstrap": "offline"}, "conda on the nodes, but offline nodes cannot download it"),
        ({"conda"}, {"bootstrap": "none"}, "--azbatch-bootstrap none installs nothing"),
        ({"apptainer"}, {"application_packages": ["tools:1"]}, "apptainer on the nodes"),
        ({"apptainer"}, {"bootstrap": "offline", "node_provides": ["conda"]}, "--azbatch-node-provides apptainer"),
    ],
)
@pytest.mark.quick
def test_conda_and_apptainer_rules_without_a_way_onto_the_node_stop_with_one_line(methods, settings, fragment):
    with pytest.raises(SettingsError) as error:
        setup(methods=methods, **settings).check([pool()])
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.startswith("azbatch: ")


@pytest.mark.quick
def test_bootstrap_modes_that_fit_their_nodes_pass_the_check():
    setup(methods={"conda", "apptainer"}).check([pool()])  # pip installs both
    setup(methods={"conda"}, bootstrap="container", container_image="img").check([pool(containers=True)])
    setup(methods={"apptainer"}, bootstrap="offline", node_provides=["apptainer"]).check([pool()])


@pytest.mark.quick
def test_pip_and_offline_on_an_image_with_too_old_a_python_stop_with_one_line():
    for mode in ("offline", "pip"):
        with pytest.raises(SettingsError, match=rf"whose python3 3\.10 is older than --azbatch-bootstrap {mode} "
                                                r"needs \(Snakemake 9: >= 3\.11\).*--azbatch-node-python"):
            setup(bootstrap=mode).check([pool(UBUNTU_22)])
        setup(bootstrap=mode, node_python="3.12").check([pool(UBUNTU_22)])  # the start task installs a newer one
    with pytest.raises(SettingsError, match=r"pool 'p' would be created with .*22_04-lts.*nothing was created"):
        setup().check([pool(UBUNTU_22)], planned="P")
    setup(bootstrap="container", container_image="img").check([pool(UBUNTU_22, containers=True)], planned="p")
    setup(bootstrap="none").check([pool(UBUNTU_22)])  # the image (or start task) is the user's statement
    setup(bootstrap="pip", container_image="img").check([pool(UBUNTU_22, containers=True)])  # the image's python3


@pytest.mark.quick
def test_app_package_mode_names_a_missing_package():
    with pytest.raises(SettingsError, match="application package tools:2 does not exist"):
        setup(application_packages=["tools:2"]).check_applications(["tools:2"])
    setup(application_packages=["tools:2"]).check_applications([])


@pytest.mark.quick
def test_node_python_of_common_batch_images():
    assert image_python(UBUNTU_24) == "3.12" and image_python(UBUNTU_22) == "3.10"
    assert image_python(("debian", "debian-12", "12")) == "3.11" and image_python(("x", "y", "z")) is None
    assert image_python(None) is None


@pytest.mark.quick
@pytest.mark.parametrize("settings, fragment", [
    ({"node_python": "3.10"}, "--azbatch-node-python"),
    ({"node_python": "three"}, "--azbatch-node-python"),
    ({"node_provides": ["docker"]}, "--azbatch-node-provides"),
    ({"node_packages": ["not a requirement!"]}, "--azbatch-node-packages"),
    ({"node_packages": ["numpy"], "bootstrap": "none"}, "--azbatch-node-packages"),
    ({"conda_installer": "ftp://x"}, "--azbatch-conda-installer"),
])  # fmt: skip
def test_bad_bootstrap_settings_get_one_line(settings, fragment):
    with pytest.raises(SettingsError) as error:
        config(**settings)
    assert fragment in str(error.value) and "\n" not in str(error.value)


# ---- the install-once logic, run in bash ---------------------------------------------------------------------------

FAKE_INSTALLER = """#!/bin/bash
# Stands in for Miniforge's installer: `bash installer -b -p PREFIX`; counts its runs.
echo run >> "$COUNT"
sleep 0.5
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho fake conda\\n' > "$3/bin/conda"
chmod 755 "$3/bin/conda"
"""


def run_part(part: str, shared: Path, count: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AZ_BATCH_NODE_SHARED_DIR": str(shared), "AZ_BATCH_NODE_ID": "tvm-1", "COUNT": str(count)}
    return subprocess.run(["bash", "-c", node_script.preparation_script([part])], env=env, capture_output=True,
                          text=True, timeout=60)


def test_conda_is_installed_once_per_node_even_when_jobs_prepare_it_at_once(tmp_path):
    installer = tmp_path / "Miniforge3.sh"
    installer.write_text(FAKE_INSTALLER)
    shared, count = tmp_path / "shared", tmp_path / "count"
    part = node_script.conda_part(node_script.CondaInstall(installer.as_uri()))
    with ThreadPoolExecutor(3) as pool_:
        results = list(pool_.map(lambda _: run_part(part, shared, count), range(3)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert count.read_text() == "run\n"  # three preparation tasks, one install (the others waited on the lock)
    assert sum("installing Miniforge" in r.stdout for r in results) == 1
    later = run_part(part, shared, count)
    assert "already on this node" in later.stdout and count.read_text() == "run\n"
    prefix = node_script.task_prefix(node_script.task_path_dirs(None, conda=True, apptainer=False))
    task = subprocess.run(["bash", "-c", f"{prefix}; conda"], env={**os.environ, "AZ_BATCH_NODE_SHARED_DIR": str(shared)},
                          capture_output=True, text=True)
    assert task.stdout == "fake conda\n"


def test_an_unreachable_conda_installer_fails_the_preparation_in_one_line(tmp_path):
    part = node_script.conda_part(node_script.CondaInstall((tmp_path / "missing.sh").as_uri()))
    result = run_part(part, tmp_path / "shared", tmp_path / "count")
    assert result.returncode == node_script.FAILED_EXIT
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("azbatch bootstrap on node tvm-1: downloading the conda installer") and "--azbatch-conda-installer" in last
    assert not (tmp_path / "shared/azbatch/miniforge/.complete").exists()  # redone next time, not half-used


def test_a_node_with_too_old_a_python_fails_the_preparation_in_one_line(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\ncase \"$1\" in -V) echo 'Python 3.10.12';; *) exit 1;; esac\n")
    (fake_bin / "python3").chmod(0o755)
    install = node_script.SnakemakeInstall("9.1.0")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "AZ_BATCH_NODE_SHARED_DIR": str(tmp_path), "AZ_BATCH_NODE_ID": "n1"}
    result = subprocess.run(["bash", "-c", node_script.preparation_script([node_script.snakemake_part(install)])],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == node_script.FAILED_EXIT
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("azbatch bootstrap on node n1: python3 is 3.10.12, Snakemake 9.1.0 needs >= 3.11;")
    assert "--azbatch-bootstrap container" in line


@pytest.mark.quick
def test_preparation_parts_compose_in_order():
    script = node_script.preparation_script(["echo bootstrap", "", "echo sources"])
    assert script.splitlines()[-2:] == ["echo bootstrap", "echo sources"]
