"""What runs on a node to give it the run's Snakemake (and conda / apptainer when the workflow needs them): pure
shell text, no network. The job preparation task's script is composed of parts (`preparation_script(parts)`), so
other concerns (e.g. unpacking sources) add a part of their own.

Everything lives in the node's shared directory and is installed once per node, under `flock`, with a `.complete`
marker written last: several jobs may prepare one node at once, a later run (or job) finds the marker and reuses
the installation, and an interrupted install is redone instead of half-used.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 11)  # Snakemake 9's own floor
SHARED = "$AZ_BATCH_NODE_SHARED_DIR"
AZBATCH_DIR = f"{SHARED}/azbatch"
# Resource-file paths of the preparation task (relative to its working directory).
UV_WHEEL_DIR = "azbatch-uv"
WHEELHOUSE_DIR = "azbatch-wheelhouse"
CA_DIR = "azbatch-ca"
# uv for nodes that reach the package index (pip mode): fetched there by the node itself, version and sha256 pinned
# per machine type (`uname -m`); the plugin stages uv's wheel only for offline nodes.
NODE_UV_VERSION = "0.13.9"
NODE_UV_WHEELS = {
    "x86_64": ("https://files.pythonhosted.org/packages/3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/"
               "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
               "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19"),
    "aarch64": ("https://files.pythonhosted.org/packages/fe/2f/51a5de367c602592c018a42a23d57fba5f2689fe6c3bf025dcf043b39c61/"
                "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
                "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375"),
}
DEFAULT_INDEX = "https://pypi.org/simple"
# Where curl, Python (ssl, requests, pip), uv and conda look for a CA bundle given by the environment.
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT")
# The node's own bundle, by distribution (Debian/Ubuntu, RHEL/Alma/Mariner, others).
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
# A failed bootstrap says so in one line on stderr and exits with this code; the plugin shows both.
FAILED_EXIT = 3


def snakemake_dir(version: str, extras: tuple[str, ...] = ()) -> str:
    """The node-wide environment holding Snakemake `version` (and `extras`): one per version and set of extra
    packages, shared by every run that asks for the same."""
    if not extras:
        return f"{SHARED}/snakemake-{version}"
    tag = hashlib.sha256("\n".join(sorted(extras)).encode()).hexdigest()[:8]
    return f"{SHARED}/snakemake-{version}-{tag}"


def conda_dir() -> str:
    return f"{AZBATCH_DIR}/miniforge"


def conda_envs_dir() -> str:
    """Snakemake's --conda-prefix on the node: each environment is built once per node, reused by every task."""
    return f"{AZBATCH_DIR}/conda-envs"


def apptainer_dir() -> str:
    return f"{AZBATCH_DIR}/apptainer"


def apptainer_images_dir() -> str:
    """Snakemake's --apptainer-prefix on the node: each image is pulled once per node."""
    return f"{AZBATCH_DIR}/apptainer-images"


@dataclass(frozen=True)
class SnakemakeInstall:
    """How the preparation task installs Snakemake: `uv_wheel` (file name in UV_WHEEL_DIR) is uv's staged wheel
    (offline nodes); empty, the node fetches the pinned uv (NODE_UV_WHEELS) from the package index itself.
    `offline` installs from the staged wheelhouse built for `python` (e.g. "3.13"), else from the package index;
    `extras` are more requirements installed with Snakemake (e.g. libraries of the workflow's scripts).
    `fetch_uv` / `fetch_wheels`: shell commands that download the staged uv wheel / the wheelhouse into the working
    directory, run only when that installation is missing (empty: Batch downloaded them as resource files)."""

    version: str
    uv_wheel: str = ""
    uv_version: str = NODE_UV_VERSION
    offline: bool = False
    python: str | None = None
    extras: tuple[str, ...] = ()
    fetch_uv: str = ""
    fetch_wheels: str = ""

    @property
    def target(self) -> str:
        return snakemake_dir(self.version, self.extras)


def _fail(message: str) -> str:
    """A shell statement printing one line to stderr and ending the script with FAILED_EXIT."""
    return f'{{ echo "azbatch bootstrap on node $AZ_BATCH_NODE_ID: {message}" >&2; exit {FAILED_EXIT}; }}'


def python_check(install: SnakemakeInstall) -> list[str]:
    """python3 exists, is new enough, and (offline) matches the wheelhouse: else one line naming what to change."""
    floor = ".".join(map(str, MIN_PYTHON))
    instead = "use a pool image with python3 >= 3.11 (e.g. Ubuntu 24.04), install it in the pool's start task, or use --azbatch-bootstrap container / app-package"
    lines = [
        f"command -v python3 >/dev/null || {_fail('no python3 on this node; ' + instead)}",
        f"python3 -c 'import sys; sys.exit(sys.version_info < {MIN_PYTHON})' || "
        + _fail(f"python3 is $(python3 -V 2>&1 | cut -d' ' -f2), Snakemake {install.version} needs >= {floor}; {instead}"),
    ]
    if install.offline and install.python:
        wanted = tuple(int(p) for p in install.python.split("."))
        lines.append(
            f"python3 -c 'import sys; sys.exit(sys.version_info[:2] != {wanted})' || "
            + _fail(
                f"python3 is $(python3 -V 2>&1 | cut -d' ' -f2) but the offline wheelhouse is for Python "
                f"{install.python}; set --azbatch-node-python to the node's version"
            )
        )
    return lines


def once(target: str, body: list[str], what: str) -> list[str]:
    """Run `body` (which installs into `target`) unless `target/.complete` exists; one node-wide lock per target."""
    indented = ["    " + line for line in body]
    return [
        f'if [ ! -e "{target}/.complete" ]; then',
        f'  mkdir -p "$(dirname "{target}")"',
        f'  exec 9>"{target}.lock"',
        f"  flock 9 || {_fail('flock failed on ' + target + '.lock')}",
        f'  if [ ! -e "{target}/.complete" ]; then',
        f'    echo "azbatch bootstrap: installing {what} into {target}"',
        f'    rm -rf "{target}"',
        *indented,
        f'    touch "{target}/.complete"',
        "  fi",
        "  exec 9>&-",
        "else",
        f'  echo "azbatch bootstrap: {what} already on this node"',
        "fi",
    ]


def _fetch(command: str, what: str) -> list[str]:
    """The download of staged files an installation needs, inside its install-once block: a node (or a later run)
    that has the installation downloads nothing."""
    if not command:
        return []
    return [f"{command} || " + _fail(f"downloading {what} from the staging container failed (see the line above)")]


def index_fetch_source() -> str:
    """index_fetch.py without its docstring, for `python3 -c` on the node."""
    source = (Path(__file__).with_name("index_fetch.py")).read_text()
    return source[source.index('"""', 3) + 3:].lstrip()


INDEX_FETCH = "AZBATCH_INDEX_FETCH"  # the shell variable holding index_fetch.py's source


def _index_fetch(*args: str) -> str:
    """Run index_fetch.py on the node; on failure it has printed its one line, and the script ends."""
    return f'python3 -c "${INDEX_FETCH}" {" ".join(args)} || exit {FAILED_EXIT}'


def uv_binary(install: SnakemakeInstall) -> tuple[str, list[str]]:
    """The uv binary's path and the lines that unpack it once per node from its wheel (python3's zipfile: stock
    nodes have no unzip): the staged wheel, or the pinned one the node fetches from the index."""
    target = f"{AZBATCH_DIR}/uv-{install.uv_version}"
    if install.uv_wheel:
        wheel = f"{UV_WHEEL_DIR}/{install.uv_wheel}"
        fetch = _fetch(install.fetch_uv, f"uv {install.uv_version}")
    else:
        wheel = f"{UV_WHEEL_DIR}/uv-{install.uv_version}.whl"
        arms = " ".join(f'{arch}) uv_url={url} uv_sha256={sha};;' for arch, (url, sha) in NODE_UV_WHEELS.items())
        fetch = [
            f'case "$(uname -m)" in {arms} *) '
            + _fail(f"no pinned uv for machine type $(uname -m) (pinned: {', '.join(NODE_UV_WHEELS)}); use "
                    "--azbatch-bootstrap container or app-package") + ";; esac",
            f'mkdir -p "{UV_WHEEL_DIR}"',
            _index_fetch("fetch", '"$uv_url"', '"$uv_sha256"', f'"{wheel}"'),
        ]
    body = [
        *fetch,
        f'python3 -m zipfile -e "{wheel}" "{target}.unpack"',
        f'mkdir -p "{target}" && mv "{target}.unpack/uv-{install.uv_version}.data/scripts/uv" "{target}/uv"',
        f'rm -rf "{target}.unpack"; chmod 755 "{target}/uv"',
        *([] if install.uv_wheel else [f'rm -f "{wheel}"']),  # fetched here: not kept in the job's directory
    ]
    return f"{target}/uv", once(target, body, f"uv {install.uv_version}")


def snakemake_part(install: SnakemakeInstall) -> str:
    """Snakemake `version` into the node's shared directory, unless the node's python3 already has exactly it (a
    node image or start task that provides it)."""
    target = install.target
    requirements = " ".join(shlex.quote(r) for r in (f"snakemake=={install.version}", *install.extras))
    uv, uv_lines = uv_binary(install)
    source = f'--no-index --find-links "$PWD/{WHEELHOUSE_DIR}"' if install.offline else ""
    # uv makes the environment itself (stock nodes have no venv module and no pip) and never downloads a Python.
    failed = f"installing snakemake {install.version} with uv failed"
    if install.offline:
        on_failure = _fail(f"{failed} (see the lines above)")
    else:  # name what failed: python3 probes the index the way it fetched uv
        probe = _index_fetch("probe", f'"${{UV_INDEX_URL:-{DEFAULT_INDEX}}}/snakemake/"')
        on_failure = f"{{ {probe}; {_fail(failed + ' though python3 reaches the index (see the lines above)')}; }}"
    body = [
        *_fetch(install.fetch_wheels, "the offline wheelhouse"),
        f'"{uv}" venv --quiet --no-python-downloads --python "$(command -v python3)" "{target}"',
        f'"{uv}" pip install --quiet --no-python-downloads --link-mode copy --python "{target}/bin/python" '
        f'{source} {requirements} || {on_failure}',
    ]
    check = f"python3 -c \"import sys, snakemake; sys.exit(snakemake.__version__ != '{install.version}')\" 2>/dev/null"
    if install.extras:
        check = "false"  # extra packages always get the node-wide environment
    lines = [
        f"if {check}; then",
        f'  echo "azbatch bootstrap: the node python3 already has snakemake {install.version}"',
        "else",
        *["  " + line for line in python_check(install)],
        *([] if install.offline and install.uv_wheel else [f"  {INDEX_FETCH}={shlex.quote(index_fetch_source())}"]),
        f'  export UV_CACHE_DIR="{AZBATCH_DIR}/uv-cache"',
        # The node's trust store, which the pool's start task controls (e.g. a TLS-inspecting proxy's CA), or the
        # bundle ca_part made (SSL_CERT_FILE).
        "  export UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1",
        *["  " + line for line in uv_lines],
        *["  " + line for line in once(target, body, f"snakemake {install.version}" + "".join(f" + {e}" for e in install.extras))],
        "fi",
    ]
    return "\n".join(lines)


def ca_bundle_path(ca_sha256: str) -> str:
    """The node's trust store plus the run's CA certificates (--azbatch-node-ca-bundle), one file per content."""
    return f"{AZBATCH_DIR}/ca-bundle-{ca_sha256[:16]}.pem"


def ca_exports(ca_sha256: str) -> str:
    return f'export {" ".join(f"{name}={ca_bundle_path(ca_sha256)}" for name in CA_BUNDLE_VARIABLES)}'


def ca_part(ca_sha256: str, fetch_ca: str = "") -> str:
    """Once per node: the node's own bundle plus the staged CA file (`CA_DIR/ca.pem`, fetched by `fetch_ca` when
    missing) into ca_bundle_path; then everything after (uv, python3, curl, conda) trusts it."""
    bundle = ca_bundle_path(ca_sha256)
    system = " ".join(SYSTEM_CA_BUNDLES)
    lines = [
        f'if [ ! -e "{bundle}" ]; then',
        *["  " + line for line in _fetch(fetch_ca, "the CA bundle (--azbatch-node-ca-bundle)")],
        f'  for f in {system}; do if [ -e "$f" ]; then cat "$f"; break; fi; done > "{bundle}.$$"',
        f'  cat "{CA_DIR}/ca.pem" >> "{bundle}.$$" && mv "{bundle}.$$" "{bundle}" || '
        + _fail("adding the CA bundle (--azbatch-node-ca-bundle) to the node's trust store failed"),
        "fi",
        ca_exports(ca_sha256),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class CondaInstall:
    """Miniforge from `installer_url` (a shell installer), once per node; `apptainer` also installs apptainer from
    conda-forge into its own environment."""

    installer_url: str
    conda: bool = True
    apptainer: bool = False


def conda_part(install: CondaInstall) -> str:
    target = conda_dir()
    url = shlex.quote(install.installer_url)
    body = [
        f'curl -fsSL --retry 3 -o "{target}.sh" {url} || '
        + _fail(f"downloading the conda installer {install.installer_url} failed; the nodes need internet (or set --azbatch-conda-installer to a URL they reach, or list conda in --azbatch-node-provides)"),
        f'bash "{target}.sh" -b -p "{target}" >/dev/null || {_fail("the conda installer failed (see the lines above)")}',
        f'rm -f "{target}.sh"',
    ]
    lines = once(target, body, "Miniforge (conda)")
    if install.apptainer:
        app = apptainer_dir()
        lines += once(
            app,
            [f'"{target}/bin/conda" create --quiet --yes -p "{app}" -c conda-forge apptainer >/dev/null || '
             + _fail("installing apptainer from conda-forge failed (see the lines above)")],
            "apptainer (conda-forge)",
        )
    return "\n".join(lines)


def preparation_script(parts: list[str]) -> str:
    """The job preparation task's script: every part in order, stopping at the first failure."""
    return "\n".join(["set -e", 'mkdir -p "$AZ_BATCH_NODE_SHARED_DIR/azbatch"', *[p for p in parts if p]])


def task_path_dirs(snakemake_target: str | None, conda: bool, apptainer: bool) -> list[str]:
    """Directories a task puts first on PATH (each only when its installation is complete)."""
    dirs = []
    if snakemake_target:
        dirs.append(snakemake_target)
    if conda:
        dirs.append(conda_dir())
    if apptainer:
        dirs.append(apptainer_dir())
    return dirs


def task_prefix(dirs: list[str], ca_sha256: str | None = None) -> str:
    """Shell run before Snakemake in every task: the node-wide installations onto PATH (and the run's CA bundle
    trusted, e.g. by conda creating environments)."""
    lines = [f'if [ -e "{d}/.complete" ]; then export PATH="{d}/bin:$PATH"; fi' for d in dirs]
    if ca_sha256:
        lines.append(f'if [ -e "{ca_bundle_path(ca_sha256)}" ]; then {ca_exports(ca_sha256)}; fi')
    return "; ".join(lines)


def executable_files(dirs: list[str]) -> str:
    """Shell making the files in `dirs` (application packages' bin/) executable where they are not: Batch does not
    document whether a package zip's Unix mode bits survive on Linux nodes, so the tasks work either way. A file
    the task user may not change gets one line on stderr saying what to do."""
    globs = " ".join(f'"{d}"/*' for d in dirs)
    return (f'for f in {globs}; do if [ -f "$f" ] && [ ! -x "$f" ]; then chmod +x "$f" 2>/dev/null || echo '
            '"azbatch: $f is not executable and the task user cannot change that: zip the package on Linux '
            '(zip keeps mode bits) with the file executable" >&2; fi; done')
