"""deploy/: the container image, docker compose, the Grafana dashboard and the
Kubernetes manifests. Docker cannot run here, so everything around it is
checked with the real tools that can:

- files: YAML and JSON parse; docker-compose.yml against the compose-spec JSON
  schema (the one dclint ships) and by Debian's `docker-compose config`, dclint's
  rules; the Kubernetes objects against the OpenAPI schemas (kubernetes-models)
  and strictly (TypeScript's excess-property check against the same models'
  types: unknown fields fail, as with `kubeconform -strict`); the Dockerfile
  with dockerfilelint and dockerfile-utils; the dashboard against Grafana's
  schema types (@grafana/schema). Each validator is also shown a broken input,
  which it must refuse.
- the image: the Dockerfile's build stage runs for real here (its context as
  its .dockerignore selects it, its `make` command, with and without the host's
  BTF); its runtime packages are exactly those of the libraries the binary
  links; the binary with the Dockerfile's file capabilities runs as the image's
  user with the container's capability set (compose's cap_add, the DaemonSet's)
  and traces the seed's Perl app, run as root in its own network namespace as
  in another container; each of the four capabilities is shown to be needed;
  the kernel's refusals that the docs describe happen (a bounding set without
  one of them; no_new_privs when the runtime permitted nothing before exec).
- the configurations: rastro starts with the compose service's environment and
  the seed's beyla.yml, and with the ConfigMap and the DaemonSet's environment.
- the dashboard: every PromQL expression of it runs against a real Prometheus
  scraping a real rastro that traces the seed's Perl app and a Perl app calling
  a real PostgreSQL, after known traffic, with Grafana's template variables
  substituted as Grafana does; each answer is compared with the value computed
  from the raw counters (exact request counts, error ratios, histogram
  quantiles); the TraceQL of the trace panel and links parse with Grafana's
  TraceQL grammar and name attributes rastro's spans carry.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import APPS, RASTRO, ROOT, free_port, needs_root, wait_for, wait_port
from db_fixtures import postgres  # noqa: F401  (module fixture)

DEPLOY = ROOT / "deploy"
NODE_DIR = ROOT / "tests" / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SEED_NETWORK = DEPLOY / "docker-compose.seed-network.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rastro-red.json"
PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "rastro.yaml"
K8S = DEPLOY / "kubernetes"
SEED_CONFIG = ROOT / "examples" / "perlapp" / "beyla.yml"

# The documented capability set (deploy/README.md), in this order everywhere.
CAPS = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]
CAP_BITS = {"BPF": 39, "PERFMON": 38, "SYS_PTRACE": 19, "DAC_READ_SEARCH": 2}
IMAGE_UID = 10001
RUNTIME_PKGS = ["libbpf1", "libelf1", "zlib1g", "libyaml-0-2", "libcurl4", "libprotobuf-c1",
                "ca-certificates"]
# Loaded with dlopen, only for https:// OTLP endpoints (src/export/otlp_curl.c).
RUNTIME_LOADED_PKGS = ["libcurl4", "ca-certificates"]

needs_node = pytest.mark.skipif(not (NODE_DIR / "node_modules").is_dir(),
                                reason="tests/deploy/node_modules missing: scripts/test.sh "
                                       "installs it (npm ci in tests/deploy)")


# ---- helpers

def validator(request):
    r = subprocess.run(["node", str(NODE_DIR / "validate.js")], input=json.dumps(request),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def privileged_alternative():
    """The commented `privileged: true` service at the end of docker-compose.yml,
    uncommented as a user would."""
    lines = COMPOSE.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l == "  # rastro:")
    block = []
    for line in lines[start:]:
        assert line.startswith("  #"), line
        block.append(line[:2] + line[4:] if line.startswith("  # ") else "")
    return yaml.safe_load("\n".join(block))["rastro"]


def dockerfile_instructions():
    """[(stage index, INSTRUCTION, argument text)] with continuation lines joined."""
    out, stage, cur = [], -1, ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not cur and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if cur and raw.lstrip().startswith("#"):
            continue
        cur += raw.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        word, _, rest = cur.strip().partition(" ")
        if word == "FROM":
            stage += 1
        out.append((stage, word, rest.strip()))
        cur = ""
    return out


def daemonset():
    (ds,) = [d for d in load_yaml_docs(K8S / "daemonset.yaml") if d["kind"] == "DaemonSet"]
    return ds


def k8s_docs(names=("namespace", "serviceaccount", "configmap", "daemonset", "otel-collector")):
    return [d for n in names for d in load_yaml_docs(K8S / f"{n}.yaml")]


def cap_mask(caps):
    return sum(1 << CAP_BITS[c] for c in caps)


def shared_tmpdir():
    """A directory the image's user can read (pytest's are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="rastro-deploy-"))
    d.chmod(0o755)
    return d


# ---- YAML, JSON

def test_every_file_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json"))
    names = {str(p.relative_to(DEPLOY)) for p in files}
    assert names == {
        "docker-compose.yml", "docker-compose.seed-network.yml",
        "grafana/dashboards/rastro-red.json", "grafana/provisioning/dashboards/rastro.yaml",
        "grafana/provisioning/datasources/rastro-datasources.yaml",
        "kubernetes/configmap.yaml", "kubernetes/daemonset.yaml", "kubernetes/kustomization.yaml",
        "kubernetes/namespace.yaml", "kubernetes/otel-collector.yaml",
        "kubernetes/serviceaccount.yaml"}
    for p in files:
        if p.suffix == ".json":
            assert isinstance(json.loads(p.read_text()), dict), p
        else:
            assert load_yaml_docs(p), p
    # the ConfigMap's embedded files parse too
    for d in k8s_docs():
        if d["kind"] == "ConfigMap":
            for key, text in d["data"].items():
                assert isinstance(yaml.safe_load(text), dict), (d["metadata"]["name"], key)


# ---- docker compose

@needs_node
def test_compose_schema():
    main = compose()
    assert validator({"op": "compose", "doc": main}) == {
        "ok": True, "schema": "compose_spec.json", "errors": []}
    alt = json.loads(json.dumps(main))
    alt["services"]["rastro"] = privileged_alternative()
    assert validator({"op": "compose", "doc": alt})["errors"] == []
    # the seed-network override merged the way compose merges it
    merged = json.loads(json.dumps(main))
    over = yaml.safe_load(SEED_NETWORK.read_text())
    for name, svc in over["services"].items():
        merged["services"][name].update(svc)
    merged["networks"] = over["networks"]
    assert validator({"op": "compose", "doc": merged})["errors"] == []
    # the validator refuses what compose would refuse
    bad = json.loads(json.dumps(main))
    bad["services"]["rastro"]["cap_add"] = "BPF"
    bad["services"]["rastro"]["pids"] = "host"
    errors = validator({"op": "compose", "doc": bad})["errors"]
    assert errors == [
        '/services/rastro must NOT have additional properties {"additionalProperty":"pids"}',
        '/services/rastro/cap_add must be array {"type":"array"}']


@needs_node
def test_compose_dclint():
    # require-project-name-field is off: Debian's docker-compose (v1) refuses
    # a top-level `name` (see test_docker_compose_config).
    r = subprocess.run([str(NODE_DIR / "node_modules/.bin/dclint"), "--color=false",
                        "-c", str(NODE_DIR / "dclint.config.json"), "--max-warnings", "0",
                        str(COMPOSE), str(SEED_NETWORK)],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "", "")
    # and it does complain about a port bound to every interface
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "docker-compose.yml"
        bad.write_text(COMPOSE.read_text().replace('"127.0.0.1:1337:1337"', '"1337:1337"'))
        r = subprocess.run([str(NODE_DIR / "node_modules/.bin/dclint"), "--color=false",
                            "-c", str(NODE_DIR / "dclint.config.json"), str(bad)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert ('Service "perl-app" is exporting port "1337:1337" without specifying the '
            'interface to listen on.') in r.stdout


def docker_compose_config(*files, project_dir=DEPLOY):
    r = subprocess.run(["docker-compose", "--project-directory", str(project_dir),
                        *[a for f in files for a in ("-f", str(f))], "config"],
                       capture_output=True, text=True, timeout=120, cwd=project_dir)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.mark.skipif(not shutil.which("docker-compose"),
                    reason="Debian package docker-compose is not installed")
def test_docker_compose_config(tmp_path):
    cfg = docker_compose_config(COMPOSE)
    svc = cfg["services"]
    assert sorted(svc) == ["grafana", "perl-app", "rastro"]
    g = svc["grafana"]
    assert g["image"] == "grafana/otel-lgtm:0.24.0"
    assert g["ports"] == ["127.0.0.1:3000:3000/tcp", "127.0.0.1:4317:4317/tcp",
                          "127.0.0.1:4318:4318/tcp"]
    assert g["volumes"] == [
        f"{PROVIDER}:/otel-lgtm/grafana/conf/provisioning/dashboards/rastro.yaml:ro",
        f"{DASHBOARD.parent}:/otel-lgtm/rastro-dashboards:ro"]
    # the provider loads the directory mounted there
    provider = yaml.safe_load(PROVIDER.read_text())["providers"][0]
    assert provider["options"]["path"] == "/otel-lgtm/rastro-dashboards"

    app = svc["perl-app"]
    assert app["build"] == {"context": str(ROOT / "examples/perlapp")}
    assert app["command"] == ["perl", "app.pl"]
    assert app["volumes"] == [f"{ROOT / 'examples/perlapp'}:/usr/src/app:rw"]
    assert app["ports"] == ["127.0.0.1:1337:1337/tcp"]

    r = svc["rastro"]
    assert r["build"] == {"context": str(ROOT), "dockerfile": "deploy/Dockerfile"}
    assert r["pid"] == "host"
    assert r["cap_add"] == CAPS and r["cap_drop"] == ["ALL"]
    assert "privileged" not in r and "user" not in r and "security_opt" not in r
    assert r["environment"] == {
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev",
        "BEYLA_CONFIG_PATH": "/etc/beyla.yml", "BEYLA_LOG_LEVEL": "INFO",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000", "RASTRO_PROMETHEUS_ADDRESS": "0.0.0.0"}
    assert r["volumes"] == [f"{SEED_CONFIG}:/etc/beyla.yml:ro",
                            "/sys/kernel/btf:/sys/kernel/btf:ro"]
    assert r["ports"] == ["127.0.0.1:9400:9400/tcp"]
    assert r["read_only"] is True
    assert r["ulimits"] == {"memlock": {"soft": -1, "hard": -1}}
    assert "networks" not in cfg  # the project's default network

    # the seed's external network, as an override
    merged = docker_compose_config(COMPOSE, SEED_NETWORK)
    assert merged["networks"] == {"ebpf_default": {"external": True, "name": "ebpf_default"}}
    for name in ("grafana", "perl-app", "rastro"):
        assert merged["services"][name]["networks"] == {"ebpf_default": {}}

    # the commented privileged alternative, uncommented
    alt = compose()
    alt["services"]["rastro"] = privileged_alternative()
    f = tmp_path / "docker-compose.privileged.yml"
    f.write_text(yaml.safe_dump(alt))
    p = docker_compose_config(f)["services"]["rastro"]
    assert p["privileged"] is True and p["user"] == "0:0"
    assert p["entrypoint"] == ["/usr/local/bin/rastro-nocaps"]
    # nothing else differs from the precise variant
    same = {k: v for k, v in r.items() if k not in ("cap_add", "cap_drop")}
    assert {k: v for k, v in p.items() if k not in ("privileged", "user", "entrypoint")} == same

    # docker-compose refuses a broken file (the check can fail)
    broken = tmp_path / "broken.yml"
    broken.write_text(COMPOSE.read_text().replace("    pid: host\n", "    pid: [host]\n"))
    b = subprocess.run(["docker-compose", "--project-directory", str(DEPLOY), "-f", str(broken),
                        "config"], capture_output=True, text=True, timeout=120)
    assert b.returncode != 0 and "pid" in b.stderr


# ---- Dockerfile

@needs_node
def test_dockerfile_lint():
    r = subprocess.run([str(NODE_DIR / "node_modules/.bin/dockerfilelint"), "-o", "json",
                        str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["totalIssues"] == 0
    assert validator({"op": "dockerfile", "text": DOCKERFILE.read_text()}) == {"diagnostics": []}
    # both linters do find problems
    bad = "FROM debian\nRUN apt-get install foo\nWORKDIR relative\nCMD [\"a\"]\nCMD [\"b\"]\n"
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as f:
        f.write(bad)
        f.flush()
        r = subprocess.run([str(NODE_DIR / "node_modules/.bin/dockerfilelint"), "-o", "json",
                            f.name], capture_output=True, text=True, timeout=60)
    titles = {i["title"] for i in json.loads(r.stdout)["files"][0]["issues"]}
    assert {"Base Image Missing Tag", "Missing parameter for `apt-get`"} <= titles
    lines = {d["line"] for d in validator({"op": "dockerfile", "text": bad})["diagnostics"]}
    assert lines == {3, 4}


def test_dockerfile_follows_make():
    ins = dockerfile_instructions()
    froms = [a for _, w, a in ins if w == "FROM"]
    assert froms == ["debian:12-slim AS build", "debian:12-slim"]
    build = [(w, a) for s, w, a in ins if s == 0]
    final = [(w, a) for s, w, a in ins if s == 1]
    # stage 1: the Makefile's dependency script, then make
    runs = [a for w, a in build if w == "RUN"]
    assert runs[0] == "scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*"
    makefile = (ROOT / "Makefile").read_text()
    assert "\t@scripts/install-deps.sh build\n" in makefile  # `make deps`
    assert "@scripts/install-deps.sh build --check-or-install" in makefile  # every build
    assert 'make -j"$(nproc)" BUILD=/build OUT=/build/rastro;' in runs[1]
    copies = [a for w, a in build if w == "COPY"]
    assert copies == ["scripts/install-deps.sh scripts/install-deps.sh", "Makefile ./",
                      "proto proto", "src src", "deploy/btf deploy/btf"]
    # stage 2: runtime libraries, the user, the file capabilities
    assert ("COPY", "--from=build /build/rastro /usr/local/bin/rastro") in final
    (run,) = [a for w, a in final if w == "RUN"]
    pkgs = re.search(r"apt-get install -y --no-install-recommends (.*?); ", run).group(1).split()
    assert pkgs == RUNTIME_PKGS + ["libcap2-bin"]
    assert "apt-get purge -y --auto-remove libcap2-bin;" in run
    setcap = re.search(r"setcap (\S+)\+ep /usr/local/bin/rastro;", run).group(1)
    assert setcap.split(",") == ["cap_" + c.lower() for c in CAPS]
    assert "cp /usr/local/bin/rastro /usr/local/bin/rastro-nocaps;" in run
    assert f"useradd --system --uid {IMAGE_UID} --gid {IMAGE_UID}" in run
    assert ("USER", f"{IMAGE_UID}:{IMAGE_UID}") in final
    assert ("ENTRYPOINT", '["/usr/local/bin/rastro"]') in final
    # the package names exist in Debian 12
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(re.findall(r"^Package: (\S+)$", r.stdout, re.M)) == sorted(pkgs)
    # the Dockerfile's own ignore file lets in exactly what stage 1 copies
    ignore = [l for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if l and not l.startswith("#")]
    assert ignore == ["*", "!Makefile", "!proto/", "!src/", "!scripts/install-deps.sh",
                      "!deploy/btf/"]


# ---- the image's build stage, run here

def dockerignore_context(dest):
    """Copies the build context as deploy/Dockerfile.dockerignore selects it."""
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        if line.startswith("!"):
            src = ROOT / line[1:].rstrip("/")
            if src.is_dir():
                shutil.copytree(src, dest / line[1:].rstrip("/"),
                                ignore=shutil.ignore_patterns("*.h") if "btf" in line else None)
            else:
                (dest / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / src.relative_to(ROOT))


def build_stage_script(build_dir):
    """The build stage's make step, as written in the Dockerfile, with its
    /build directory moved under build_dir."""
    runs = [a for s, w, a in dockerfile_instructions() if s == 0 and w == "RUN"]
    script = runs[1]
    return re.sub(r"(?<![\w/])/build\b", str(build_dir), script)


@pytest.fixture(scope="module")
def image_build():
    """Runs the Dockerfile's build stage here: the context its ignore file
    selects, copied as its COPY steps do, then its make step."""
    work = shared_tmpdir()
    try:
        ctx = work / "src"
        ctx.mkdir()
        dockerignore_context(ctx)
        build = work / "build"
        r = subprocess.run(["sh", "-c", build_stage_script(build)], cwd=ctx, capture_output=True,
                           text=True, timeout=900, env={**os.environ, "VMLINUX_H": ""})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        yield {"work": work, "ctx": ctx, "build": build, "binary": build / "rastro",
               "log": r.stdout + r.stderr}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@needs_root
def test_image_build_stage(image_build):
    b = image_build
    assert b["binary"].is_file()
    v = subprocess.run([str(b["binary"]), "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("rastro ")
    assert v.stdout in b["log"]  # the build step's own check ran
    # debug sections stripped, symbols kept
    sections = subprocess.run(["readelf", "-S", str(b["binary"])], capture_output=True,
                              text=True).stdout
    assert ".debug_info" not in sections and ".symtab" in sections
    # vmlinux.h came from the host's BTF (the build stage sees /sys)
    assert "bpftool btf dump file /sys/kernel/btf/vmlinux format c" in b["log"]
    # only the selected files were in the context
    assert sorted(p.name for p in b["ctx"].iterdir()) == ["Makefile", "deploy", "proto",
                                                          "scripts", "src"]


@needs_root
def test_image_build_without_host_btf(image_build):
    """A build host without /sys/kernel/btf/vmlinux: the Dockerfile says how,
    and VMLINUX_H (a header from any BTF machine) makes it build."""
    b = image_build
    hide = "mount -t tmpfs none /sys/kernel/btf && exec sh -c \"$0\""
    fresh = b["work"] / "build-nobtf"
    r = subprocess.run(["unshare", "-m", "sh", "-c", hide, build_stage_script(fresh)],
                       cwd=b["ctx"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "VMLINUX_H": ""})
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "rastro image: the build host exposes no /sys/kernel/btf/vmlinux; pass --build-arg "
        "VMLINUX_H=<path in the context> (see deploy/Dockerfile)")
    assert not (fresh / "rastro").exists()

    header = b["ctx"] / "deploy" / "btf" / "vmlinux.h"
    shutil.copy2(b["build"] / "vmlinux.h", header)
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", hide, build_stage_script(fresh)],
                           cwd=b["ctx"], capture_output=True, text=True, timeout=900,
                           env={**os.environ, "VMLINUX_H": "deploy/btf/vmlinux.h"})
    finally:
        header.unlink()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "bpftool btf dump" not in r.stdout + r.stderr
    assert (fresh / "vmlinux.h").read_bytes() == (b["build"] / "vmlinux.h").read_bytes()
    assert subprocess.run([str(fresh / "rastro"), "--version"]).returncode == 0


@needs_root
def test_runtime_packages_are_the_linked_libraries(image_build):
    """The final image installs exactly the Debian packages of the libraries
    the Makefile links (LDLIBS; libc6, for -lm, is in the base image), plus
    libcurl4 and ca-certificates for https OTLP endpoints (libcurl is loaded
    at run time, only for those); every library the binary needs directly is
    among them, and libcurl is not one of them. The binary is the one the
    Dockerfile's build stage makes."""
    binary = image_build["binary"]
    makefile = (ROOT / "Makefile").read_text()
    ldlibs = re.search(r"^LDLIBS := (.*)$", makefile, re.M).group(1).split()
    paths = {}
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            paths[m.group(1)] = m.group(2)

    def package(soname):
        path = paths[soname]
        for c in (path, os.path.realpath(path), "/usr" + path if path.startswith("/lib/")
                  else path):
            r = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":")[0]
        pytest.fail(f"no Debian package owns {soname} ({path})")

    linked = set()
    for flag in ldlibs:
        # -lyaml is libyaml-0.so.2
        (soname,) = [s for s in paths if re.fullmatch(rf"lib{re.escape(flag[2:])}(-[0-9.]+)?"
                                                      r"\.so\.\d+", s)]
        linked.add(package(soname))
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True,
                         check=True).stdout
    needed = {package(s) for s in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)}
    assert needed <= linked
    assert sorted(linked - {"libc6"}) == sorted(set(RUNTIME_PKGS) - set(RUNTIME_LOADED_PKGS))
    assert not any(s.startswith("libcurl") for s in re.findall(r"\[(.+?)\]", out))
    # the name the transport loads is the one the package ships
    src = (ROOT / "src" / "export" / "otlp_curl.c").read_text()
    assert '"libcurl.so.4"' in src
    assert subprocess.run(["dpkg", "-S", "libcurl.so.4"], capture_output=True,
                          text=True).stdout.startswith("libcurl4")


# ---- capabilities: the same list everywhere, and each one needed

def test_capability_lists_agree():
    c = compose()["services"]["rastro"]
    assert c["cap_add"] == CAPS and c["cap_drop"] == ["ALL"] and c["pid"] == "host"
    ds = daemonset()
    pod = ds["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    sc = ctr["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": CAPS}
    assert pod["hostPID"] is True and "privileged" not in sc
    # works with every runtime (test_file_capabilities_under_runtimes)
    assert sc["allowPrivilegeEscalation"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["runAsNonRoot"] is True
    run = [a for s, w, a in dockerfile_instructions() if s == 1 and w == "RUN"][0]
    assert re.search(r"setcap (\S+)\+ep", run).group(1) == ",".join(
        "cap_" + x.lower() for x in CAPS)
    # the README's table of required capabilities
    readme = (DEPLOY / "README.md").read_text()
    table = readme.split("## Capabilities", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `CAP_([A-Z_]+)` \|", table, re.M)
    assert rows == CAPS


def start_app_in_netns(port):
    """The seed's Perl app as root in a network namespace of its own, as in
    another container: (unshare process, perl pid)."""
    u = subprocess.Popen(["unshare", "--net", "--fork", "sh", "-c",
                          f"ip link set lo up && exec perl {APPS / 'app.pl'} {port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    pid = wait_for(lambda: (Path(f"/proc/{u.pid}/task/{u.pid}/children").read_text().split()
                            or [None])[0], timeout=10, what="the app's process")
    wait_for(lambda: get_in_netns(int(pid), port, "/") == 200, timeout=20,
             what="the app to answer in its namespace")
    return u, int(pid)


def get_in_netns(pid, port, path):
    r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-s", "-o", "/dev/null",
                        "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=15)
    return int(r.stdout) if r.stdout.isdigit() and r.stdout != "000" else None


def stop_group(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def finish(proc, timeout=15):
    """Stops a running rastro (SIGTERM) and collects its exit status and output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def exited(proc, timeout=30):
    """A rastro expected to stop by itself."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        finish(proc)
        raise
    return proc.returncode, out, err


LAUNCHED = []


@pytest.fixture(autouse=True)
def reap():
    """No rastro started by a test outlives it, whatever failed."""
    yield
    while LAUNCHED:
        proc = LAUNCHED.pop()
        if proc.poll() is None:
            finish(proc)


# What runc does between the runtime's configuration and the container's
# entrypoint, for a non-root user: drop the bounding set to the allowed
# capabilities, switch user keeping capabilities, set the permitted and
# effective sets the runtime asks for (containerd, CRI-O and Docker >= 24.0.6
# ask for the added capabilities; older Docker for none), optionally set
# no_new_privs, then exec.
RUNC_LIKE = r"""
import ctypes, json, os, sys
spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc:
        raise OSError(ctypes.get_errno(), what)
last = int(open("/proc/sys/kernel/cap_last_cap").read())
for c in range(last + 1):
    if c not in spec["bounding"]:
        check(libc.prctl(24, c, 0, 0, 0), "PR_CAPBSET_DROP")
check(libc.prctl(8, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
os.setgroups([])
os.setresgid(spec["uid"], spec["uid"], spec["uid"])
os.setresuid(spec["uid"], spec["uid"], spec["uid"])
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
mask = sum(1 << c for c in spec["permitted"])
data = (Data * 2)()
for i in range(2):
    data[i].effective = data[i].permitted = (mask >> (32 * i)) & 0xffffffff
check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
check(libc.prctl(8, 0, 0, 0, 0), "PR_SET_KEEPCAPS")
if spec["no_new_privs"]:
    check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
try:
    os.execv(argv[0], argv)
except OSError as e:
    sys.stderr.write(f"exec {argv[0]}: {os.strerror(e.errno)}\n")
    sys.exit(126)
"""


def run_as_image_user(binary, bounding, config, env=None, permitted=None, no_new_privs=False):
    """rastro as a container runtime starts the image's entrypoint: uid/gid
    10001, no groups, the bounding set `bounding` (cap_add), `permitted` (by
    default the same) in the permitted and effective sets before exec, no
    inheritable or ambient capabilities."""
    spec = {"uid": IMAGE_UID, "bounding": [CAP_BITS[c] for c in bounding],
            "permitted": [CAP_BITS[c] for c in (bounding if permitted is None else permitted)],
            "no_new_privs": no_new_privs}
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
    e.update({"RASTRO_TRACE_PRINTER": "json", "RASTRO_PROMETHEUS_PORT": "0",
              "RASTRO_DISCOVERY_POLL_INTERVAL": "200ms", **(env or {})})
    proc = subprocess.Popen(["/usr/bin/python3", "-c", RUNC_LIKE, json.dumps(spec), str(binary),
                             "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                            start_new_session=True)
    LAUNCHED.append(proc)
    return proc


@pytest.fixture
def capped(image_build):
    """capped(caps) -> a copy of the image's binary with those file
    capabilities, in a directory the image's user can read."""
    d = shared_tmpdir()

    def make(caps):
        path = d / f"rastro-{'-'.join(caps) or 'none'}"
        shutil.copy2(image_build["binary"], path)
        path.chmod(0o755)
        subprocess.run(["setcap", ",".join("cap_" + c.lower() for c in caps) + "+ep", str(path)],
                       check=True)
        return path

    make.dir = d
    yield make
    shutil.rmtree(d, ignore_errors=True)


def seed_config_for(directory, port):
    cfg = yaml.safe_load(SEED_CONFIG.read_text())
    cfg["discovery"]["instrument"][0]["open_ports"] = port
    for key in ("otel_traces_export", "otel_metrics_export"):
        cfg.pop(key)  # no backend here
    path = directory / "beyla.yml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o644)
    return path


@needs_root
def test_image_user_with_container_capabilities_traces_app(capped):
    """The image's binary, its file capabilities, its user, and the bounding
    set compose and the DaemonSet give: it instruments the seed's app running
    as root in another network namespace, and reports its requests."""
    assert compose()["services"]["rastro"]["cap_add"] == CAPS
    binary = capped(CAPS)
    getcap = subprocess.run(["getcap", str(binary)], capture_output=True, text=True).stdout
    assert getcap.split()[1] == "cap_dac_read_search,cap_sys_ptrace,cap_perfmon,cap_bpf=ep"
    port = free_port()
    app, app_pid = start_app_in_netns(port)
    prom_port = free_port()
    r = rc = None
    try:
        r = run_as_image_user(binary, CAPS, seed_config_for(capped.dir, port),
                              env={"RASTRO_PROMETHEUS_PORT": str(prom_port)})
        wait_port(prom_port, timeout=20)
        status = Path(f"/proc/{r.pid}/status").read_text()
        caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.M)}
        assert (caps["CapInh"], caps["CapBnd"], caps["CapAmb"]) == (0, cap_mask(CAPS), 0)
        # the file capabilities, of which rastro may give up CAP_BPF and
        # CAP_PERFMON once its programs are loaded; discovery keeps the others
        discovery = cap_mask(["SYS_PTRACE", "DAC_READ_SEARCH"])
        for k in ("CapPrm", "CapEff"):
            assert caps[k] & ~cap_mask(CAPS) == 0 and caps[k] & discovery == discovery, caps
        assert re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups() == \
            (str(IMAGE_UID),) * 4

        def body():
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=5) as f:
                return f.read().decode()

        wait_for(lambda: "rastro_instrumented_processes 1\n" in body(), timeout=15,
                 what="the app to be instrumented")
        assert get_in_netns(app_pid, port, "/products") == 200
        want = ('http_server_request_duration_seconds_count{service_name="perlapp",'
                'service_namespace="poc-ebpf",http_request_method="GET",'
                'http_response_status_code="200",http_route="/products",url_scheme="http",'
                f'server_port="{port}"}} 1')
        wait_for(lambda: want in body(), timeout=15, what="the request in the metrics")
    finally:
        if r:
            rc, out, err = finish(r)
        stop_group(app)
    assert rc == 0, err
    assert f"instrumenting pid {app_pid} (/usr/bin/perl) as service poc-ebpf/perlapp" in err
    (rec,) = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert (rec["service.name"], rec["url.path"], rec["http.response.status_code"],
            rec["process.pid"]) == ("perlapp", "/products", 200, app_pid)


@needs_root
@pytest.mark.parametrize("missing", CAPS)
def test_bounding_set_without_a_file_capability_refuses_exec(capped, missing):
    """A container not given one of the four: the kernel will not execute the
    binary (this is why the docs insist on all four)."""
    binary = capped(CAPS)
    r = run_as_image_user(binary, [c for c in CAPS if c != missing], capped.dir / "none.yml")
    rc, out, err = exited(r)
    assert (rc, err.strip()) == (126, f"exec {binary}: Operation not permitted")


@needs_root
@pytest.mark.parametrize("runtime_permits,no_new_privs,works", [
    (True, False, True),    # containerd, CRI-O, Docker >= 24.0.6
    (False, False, True),   # older Docker: the file capabilities alone
    (True, True, True),     # no_new_privs: no more than the runtime already permitted
    (False, True, False),   # older Docker with no-new-privileges: nothing
])
def test_file_capabilities_under_runtimes(capped, runtime_permits, no_new_privs, works):
    """The file capabilities are what rastro runs with, whatever the runtime
    put in the permitted set before exec; under no_new_privs (Kubernetes'
    allowPrivilegeEscalation: false, Docker's no-new-privileges) the kernel
    grants them only up to that set."""
    binary = capped(CAPS)
    port = free_port()
    r = run_as_image_user(binary, CAPS, seed_config_for(capped.dir, free_port()),
                          env={"RASTRO_PROMETHEUS_PORT": str(port)},
                          permitted=CAPS if runtime_permits else [], no_new_privs=no_new_privs)
    try:
        if works:
            wait_port(port, timeout=20)
    finally:
        rc, out, err = finish(r) if works else exited(r)
    if works:
        assert rc == 0, err
        assert "started: 1 discovery entry" in err
    else:
        assert rc == 1
        assert err.strip() == (
            "rastro: missing privileges: run as root, or grant CAP_BPF and CAP_PERFMON (plus "
            "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for discovery); this process has no CAP_BPF "
            "no CAP_PERFMON")


@needs_root
@pytest.mark.parametrize("missing", CAPS)
def test_each_capability_is_needed(capped, missing):
    """Without CAP_BPF or CAP_PERFMON rastro cannot load its programs; without
    CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH it cannot see another user's
    process (here: the app as root in another network namespace), and traces
    nothing, though it keeps rescanning."""
    caps = [c for c in CAPS if c != missing]
    binary = capped(caps)
    port = free_port()
    app, app_pid = start_app_in_netns(port)
    r = None
    try:
        r = run_as_image_user(binary, caps, seed_config_for(capped.dir, port))
        if missing in ("BPF", "PERFMON"):
            rc, out, err = exited(r)
            assert rc == 1
            have = {"BPF": "no CAP_BPF CAP_PERFMON", "PERFMON": "CAP_BPF no CAP_PERFMON"}
            assert err.strip().endswith(f"this process has {have[missing]}")
            return
        time.sleep(2.0)  # ten rescans at 200 ms
        assert r.poll() is None
        assert get_in_netns(app_pid, port, "/products") == 200
        time.sleep(1.0)
    finally:
        if r is not None and r.returncode is None:
            rc, out, err = finish(r)
        stop_group(app)
    assert rc == 0, err
    assert "started" in err
    assert "instrumenting pid" not in err
    assert [l for l in out.splitlines() if l.startswith("{")] == []


# ---- the configurations as deployed

def start_rastro_with(env, args=()):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
    e.update(env)
    proc = subprocess.Popen([str(RASTRO), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, start_new_session=True)
    LAUNCHED.append(proc)
    return proc


def started_log(proc, port):
    """rastro's log lines once it serves its endpoint, without timestamps."""
    try:
        wait_port(port, timeout=20)
        time.sleep(0.5)
    finally:
        rc, out, err = finish(proc)
    assert rc == 0, err
    return [re.sub(r"^\S+ (INFO|WARN|ERROR|DEBUG) +rastro: ", r"\1 ", l)
            for l in err.splitlines()]


@needs_root
def test_compose_service_environment_starts_rastro():
    """The compose service's environment, with the seed's beyla.yml where the
    volume puts it (BEYLA_CONFIG_PATH)."""
    svc = compose()["services"]["rastro"]
    env = dict(e.split("=", 1) for e in svc["environment"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert mounts[env["BEYLA_CONFIG_PATH"]] == "../examples/perlapp/beyla.yml"
    env["BEYLA_CONFIG_PATH"] = str(SEED_CONFIG)
    port = free_port()
    env["RASTRO_PROMETHEUS_PORT"] = str(port)  # 9400 in the container
    lines = started_log(start_rastro_with(env), port)
    assert lines[:5] == [
        "INFO data hooks: sock_send_length/sock_recv_length (socket I/O only)",
        f"INFO Prometheus endpoint on http://0.0.0.0:{port}/metrics",
        "INFO OTLP metrics export to http://grafana:4318/v1/metrics",
        "INFO OTLP traces export to http://grafana:4318/v1/traces",
        "INFO rastro 0.1.0 started: 1 discovery entry, capture 4096 bytes per syscall"]
    assert not [l for l in lines[:4] if "unknown configuration key" in l]


@needs_root
def test_configmap_and_daemonset_start_rastro(tmp_path):
    """The ConfigMap's file at the DaemonSet's mount path, its args and its
    environment (with the downward API's node name)."""
    ds = daemonset()
    (ctr,) = ds["spec"]["template"]["spec"]["containers"]
    (cm,) = [d for d in k8s_docs(["configmap"]) if d["kind"] == "ConfigMap"]
    (mount,) = [m for m in ctr["volumeMounts"] if m["name"] == "config"]
    (vol,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert ctr["args"] == ["--config", f"{mount['mountPath']}/rastro.yml"]
    cfg = tmp_path / "rastro.yml"
    cfg.write_text(cm["data"]["rastro.yml"])
    env = {}
    for e in ctr["env"]:
        value = e.get("value", "node-1" if e["name"] == "NODE_NAME" else None)
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.node.name=node-1"
    port = free_port()
    env["RASTRO_PROMETHEUS_PORT"] = str(port)  # 9400 in the pod
    assert ctr["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    lines = started_log(start_rastro_with(env, ["--config", str(cfg)]), port)
    assert lines[:5] == [
        "INFO data hooks: sock_send_length/sock_recv_length (socket I/O only)",
        f"INFO Prometheus endpoint on http://0.0.0.0:{port}/metrics",
        "INFO OTLP metrics export to http://otel-collector.observability:4318/v1/metrics",
        "INFO OTLP traces export to http://otel-collector.observability:4318/v1/traces",
        "INFO rastro 0.1.0 started: 1 discovery entry, capture 4096 bytes per syscall"]


# ---- Kubernetes

@needs_node
def test_kubernetes_schemas():
    docs = k8s_docs()
    res = validator({"op": "k8s", "docs": docs})
    assert [(r["key"], r["ok"], r["errors"]) for r in res["results"]] == [
        (k, True, []) for k in ["v1/Namespace", "v1/ServiceAccount", "v1/ConfigMap",
                                "apps/v1/DaemonSet", "v1/Namespace", "v1/ConfigMap",
                                "apps/v1/Deployment", "v1/Service"]]
    assert res["strict"] == {"ok": True, "output": ""}
    # both passes refuse broken objects
    ds = daemonset()
    bad = json.loads(json.dumps(ds))
    del bad["spec"]["selector"]
    r = validator({"op": "k8s", "docs": [bad]})
    assert r["results"][0]["errors"] == ["data/spec must have required property selector"]
    bad = json.loads(json.dumps(ds))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilites"] = \
        {"add": ["BPF"]}
    r = validator({"op": "k8s", "docs": [bad]})
    assert r["results"][0]["ok"] is True  # the OpenAPI schemas allow unknown fields
    assert r["strict"]["ok"] is False
    assert ("error TS2353: Object literal may only specify known properties, and "
            "'\"capabilites\"' does not exist in type 'ISecurityContext'.") in r["strict"]["output"]


def test_kubernetes_manifests():
    ks = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert ks["resources"] == ["namespace.yaml", "serviceaccount.yaml", "configmap.yaml",
                               "daemonset.yaml"]
    objs = [d for f in ks["resources"] for d in load_yaml_docs(K8S / f)]
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in objs} == {"rastro"}
    (ns,) = [d for d in objs if d["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (sa,) = [d for d in objs if d["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False
    ds = daemonset()
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    (ctr,) = pod["containers"]
    assert ctr["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"memory": "128Mi"}}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    # host paths: the kernel's BTF only, read-only (no tracefs, no cgroupfs, no /proc)
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {"btf": {"path": "/sys/kernel/btf", "type": "Directory"}}
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert mounts["btf"] == {"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": True}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    # the ConfigMap sends OTLP to the example Collector's Service
    (cm,) = [d for d in objs if d["kind"] == "ConfigMap"]
    cfg = yaml.safe_load(cm["data"]["rastro.yml"])
    assert cfg["discovery"]["instrument"] == [{"open_ports": "80,8080"}]
    assert cfg["prometheus_export"] == {"address": "0.0.0.0", "port": 9400}
    endpoints = {cfg[k]["endpoint"] for k in ("otel_traces_export", "otel_metrics_export")}
    assert endpoints == {"http://otel-collector.observability:4318"}
    col = load_yaml_docs(K8S / "otel-collector.yaml")
    (svc,) = [d for d in col if d["kind"] == "Service"]
    assert (svc["metadata"]["name"], svc["metadata"]["namespace"]) == \
        ("otel-collector", "observability")
    assert 4318 in [p["port"] for p in svc["spec"]["ports"]]
    (dep,) = [d for d in col if d["kind"] == "Deployment"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (ccm,) = [d for d in col if d["kind"] == "ConfigMap"]
    ocfg = yaml.safe_load(ccm["data"]["config.yaml"])
    assert ocfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    for name, p in ocfg["service"]["pipelines"].items():
        assert set(p["receivers"]) <= set(ocfg["receivers"]), name
        assert set(p["processors"]) <= set(ocfg["processors"]), name
        assert set(p["exporters"]) <= set(ocfg["exporters"]), name


# ---- the dashboard

def dashboard():
    return json.loads(DASHBOARD.read_text())


def prom_targets(d):
    return [(p["title"], t["refId"], t["expr"]) for p in d["panels"]
            for t in p.get("targets", []) if t.get("datasource", {}).get("type") == "prometheus"]


def test_dashboard_structure():
    d = dashboard()
    assert d["uid"] == "rastro-red"
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        ds = p["datasource"]
        assert ds in ({"type": "prometheus", "uid": "prometheus"},
                      {"type": "tempo", "uid": "tempo"})
        for t in p["targets"]:
            assert t["datasource"] == ds, p["title"]
    assert [v["name"] for v in d["templating"]["list"]] == ["service", "route"]
    for v in d["templating"]["list"]:
        assert v["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert v["multi"] is True and v["includeAll"] is True and "allValue" not in v
    # otel-lgtm provisions these uids (grafana/docker-otel-lgtm, docker/grafana-datasources.yaml);
    # the example provisioning file for another Grafana uses the same
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/rastro-datasources.yaml")
                        .read_text())["datasources"]
    assert [(x["type"], x["uid"]) for x in ds] == [("prometheus", "prometheus"), ("tempo", "tempo")]
    # every metric the dashboard reads is one rastro exports
    names = set(re.findall(r"\b([a-z_]+_seconds_(?:count|bucket))\b",
                           " ".join(e for _, _, e in prom_targets(d))))
    assert names == {"http_server_request_duration_seconds_count",
                     "http_server_request_duration_seconds_bucket",
                     "db_client_operation_duration_seconds_count",
                     "db_client_operation_duration_seconds_bucket"}


@needs_node
def test_dashboard_schema():
    """The dashboard against Grafana's own schema types (@grafana/schema)."""
    assert validator({"op": "dashboard", "doc": dashboard()}) == {"ok": True, "output": ""}
    bad = dashboard()
    bad["panels"][3]["gridpos"] = bad["panels"][3].pop("gridPos")
    r = validator({"op": "dashboard", "doc": bad})
    assert r["ok"] is False
    assert "Object literal may only specify known properties, and '\"gridpos\"' does not " \
           "exist in type" in r["output"]


@needs_node
def test_dashboard_traceql_parses():
    """Grafana's TraceQL grammar accepts the trace panel's and the links'
    queries (Tempo cannot run here)."""
    queries = traceql_queries(dashboard())
    res = validator({"op": "traceql", "queries": queries})["results"]
    assert [(x["query"], x["errors"]) for x in res] == [(q, []) for q in queries]
    bad = validator({"op": "traceql", "queries": ['{resource.service.name="x" &&& }']})
    assert bad["results"][0]["errors"] != []


def grafana_regex(values):
    """How Grafana's Prometheus data source writes a multi-value / include-all
    variable inside a query (prometheusSpecialRegexEscape, then (a|b))."""
    esc = [re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0),
                  v.replace("\\", "\\\\\\\\")) for v in values]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def substitute(expr, values):
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def go_seconds(ms):
    """time.Duration.Seconds() of a whole number of milliseconds."""
    return float(ms // 1000) + float((ms % 1000) * 1_000_000) / 1e9


def bucket_quantile(q, buckets):
    """Prometheus 2.42's bucketQuantile over [(upper bound, cumulative rate)]."""
    b = sorted(buckets)
    assert b[-1][0] == float("inf")
    total = b[-1][1]
    rank = q * total
    i = next(i for i in range(len(b) - 1) if b[i][1] >= rank) \
        if any(b[i][1] >= rank for i in range(len(b) - 1)) else len(b) - 1
    if i == len(b) - 1:
        return b[-2][0]
    if i == 0 and b[0][0] <= 0:
        return b[0][0]
    start, end, count = 0.0, b[i][0], b[i][1]
    if i > 0:
        start = b[i - 1][0]
        count -= b[i - 1][1]
        rank -= b[i - 1][1]
    return start + (end - start) * (rank / count)


class Prom:
    """Queries at a given evaluation time (the fixture's Prometheus)."""

    def __init__(self, prometheus):
        self.p = prometheus

    def _get(self, path, params):
        url = f"http://127.0.0.1:{self.p.port}{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=20) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def query(self, expr, t_ms=None):
        params = {"query": expr}
        if t_ms is not None:
            params["time"] = f"{t_ms // 1000}.{t_ms % 1000:03d}"
        body = self._get("/api/v1/query", params)
        assert body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", expr
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def value(self, expr, t_ms=None):
        res = self.query(expr, t_ms)
        assert len(res) <= 1, res
        return res[0][1] if res else None

    def label_values(self, label, selector, t_ms):
        body = self._get(f"/api/v1/label/{label}/values",
                         {"match[]": selector, "start": str(t_ms // 1000 - 600),
                          "end": str(t_ms // 1000 + 1)})
        assert body["status"] == "success", body
        return body["data"]

    def last_scrape_ms(self):
        return round(self.value('timestamp(up{job="rastro"})') * 1000)


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def dbapp(servers, tmp_path, postgres):  # noqa: F811
    port = free_port()
    # MariaDB and Redis are never used here (connections are made on first use)
    return servers(["perl", str(APPS / "dbapp.pl"), str(port), str(postgres.port),
                    str(free_port()), str(free_port())], port, log=tmp_path / "dbapp.log")


PHASE1 = {"perl": ["/", "/products", "/fail", "/status/500", "/status/200", "/slow"],
          "db": ["/pg/products", "/pg/order", "/pg/fail"]}
PHASE2 = {"perl": ["/"] * 4 + ["/products"] * 6 + ["/fail"] * 3 + ["/status/500"] * 2
          + ["/status/200"] * 2 + ["/slow"] * 2,
          "db": ["/pg/products"] * 3 + ["/pg/order"] * 2 + ["/pg/fail"] * 2}
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"
DB_COUNT = "db_client_operation_duration_seconds_count"
DB_BUCKET = "db_client_operation_duration_seconds_bucket"


@needs_root
@pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian package prometheus is not "
                    "installed")
def test_dashboard_queries_against_prometheus(rastro, perl_app, dbapp, tmp_path):
    from test_metrics import Prometheus

    # rastro as in docker-compose.yml: the seed's beyla.yml (its perlapp entry
    # on the test's port, plus the database app) and the service's environment
    cfg = yaml.safe_load(SEED_CONFIG.read_text())
    entry = cfg["discovery"]["instrument"][0]
    assert (entry["name"], entry["namespace"]) == ("perlapp", "poc-ebpf")
    entry["open_ports"] = perl_app.port
    cfg["discovery"]["instrument"].append(
        {"open_ports": dbapp.port, "name": "dbapp", "namespace": "poc-ebpf"})
    for key in ("otel_traces_export", "otel_metrics_export"):
        cfg.pop(key)  # no OTLP backend here: the same aggregation is scraped
    env = dict(e.split("=", 1) for e in compose()["services"]["rastro"]["environment"])
    del env["BEYLA_CONFIG_PATH"]
    prom_port = free_port()
    env["RASTRO_PROMETHEUS_PORT"] = str(prom_port)
    r = rastro(yaml.safe_dump(cfg), env=env)
    r.wait_traced(perl_app.pid)
    r.wait_traced(dbapp.pid)
    wait_port(prom_port)

    status = {"/fail": 500, "/status/500": 500, "/pg/fail": 500}

    def traffic(phase):
        for app, port in (("perl", perl_app.port), ("db", dbapp.port)):
            got = [get(port, path) for path in phase[app]]
            assert got == [status.get(path, 200) for path in phase[app]], app

    def servers_seen():
        return len(r.snapshot(lambda x: x["kind"] == "SERVER"))

    # phase 1 creates every series before Prometheus first scrapes
    traffic(PHASE1)
    n1 = len(PHASE1["perl"]) + len(PHASE1["db"])
    r.wait_records(n1, lambda x: x["kind"] == "SERVER", timeout=30)
    p = Prometheus(tmp_path, f"127.0.0.1:{prom_port}")
    try:
        prom = Prom(p)
        totals = {f'sum({HTTP_COUNT}{{service_name="perlapp"}})': len(PHASE1["perl"]),
                  f'sum({HTTP_COUNT}{{service_name="dbapp"}})': len(PHASE1["db"]),
                  f'sum({DB_COUNT}{{service_name="dbapp"}})': len(PHASE1["db"])}
        for expr, n in totals.items():
            assert p.wait_value(expr, n) == n, expr
        t1 = prom.last_scrape_ms()
        for expr, n in totals.items():
            assert prom.value(expr, t1) == n, expr

        traffic(PHASE2)
        r.wait_records(n1 + len(PHASE2["perl"]) + len(PHASE2["db"]),
                       lambda x: x["kind"] == "SERVER", timeout=60)
        for expr, n in totals.items():
            total = n + (len(PHASE2["perl"]) if "perlapp" in expr else len(PHASE2["db"]))
            assert p.wait_value(expr, total) == total, expr
            totals[expr] = total
        t2 = prom.last_scrape_ms()
        for expr, n in totals.items():
            assert prom.value(expr, t2) == n, expr
        assert servers_seen() == sum(totals[e] for e in list(totals)[:2])
        window_ms = t2 - t1
        secs = go_seconds(window_ms)
        check_dashboard(prom, r, t1, t2, window_ms, secs)
    finally:
        p.stop()


def deltas(prom, metric, t1, t2):
    """{frozenset(labels): increase between the two scrapes} of every series."""
    def at(t):
        return {frozenset((k, v) for k, v in m.items() if k not in ("__name__",)): val
                for m, val in prom.query(metric, t)}
    a, b = at(t1), at(t2)
    assert set(a) == set(b), "a series appeared during the window"
    return {k: b[k] - a[k] for k in b}


def grouped(d, by):
    out = {}
    for labels, v in d.items():
        ld = dict(labels)
        key = tuple(ld.get(x, "") for x in by)
        out[key] = out.get(key, 0) + v
    return out


def keyed(result, by):
    out = {}
    for m, v in result:
        key = tuple(m.get(x, "") for x in by)
        assert key not in out, key
        out[key] = v
    return out


def quantiles(bucket_deltas, by, q, secs):
    groups = {}
    for labels, v in bucket_deltas.items():
        ld = dict(labels)
        key = tuple(ld.get(x, "") for x in by)
        le = float(ld["le"])
        g = groups.setdefault(key, {})
        g[le] = g.get(le, 0.0) + v / secs
    return {k: bucket_quantile(q, list(g.items())) for k, g in groups.items()}


def check_dashboard(prom, r, t1, t2, window_ms, secs):
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}

    # the variables' queries, as Grafana runs label_values(selector, label)
    def label_values(var, values):
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
        assert m, var["query"]
        return prom.label_values(m.group(2), substitute(m.group(1), values), t2)

    services = label_values(variables["service"], {})
    assert services == ["dbapp", "perlapp"]
    routes_all = label_values(variables["route"], {"service": grafana_regex(services)})
    assert routes_all == ["/", "/fail", "/pg/fail", "/pg/order", "/pg/products", "/products",
                          "/slow", "/status/*"]
    assert label_values(variables["route"], {"service": grafana_regex(["perlapp"])}) == \
        ["/", "/fail", "/products", "/slow", "/status/*"]

    # raw counters: the traffic of phase 2, exactly
    http = deltas(prom, HTTP_COUNT, t1, t2)
    by_route = grouped(http, ("service_name", "http_route", "http_response_status_code"))
    assert by_route == {
        ("perlapp", "/", "200"): 4, ("perlapp", "/products", "200"): 6,
        ("perlapp", "/fail", "500"): 3, ("perlapp", "/status/*", "500"): 2,
        ("perlapp", "/status/*", "200"): 2, ("perlapp", "/slow", "200"): 2,
        ("dbapp", "/pg/products", "200"): 3, ("dbapp", "/pg/order", "200"): 2,
        ("dbapp", "/pg/fail", "500"): 2}
    db = deltas(prom, DB_COUNT, t1, t2)
    db_by = ("service_name", "db_system_name", "db_operation_name", "db_collection_name")
    assert grouped(db, db_by + ("error_type",)) == {
        ("dbapp", "postgresql", "SELECT", "products", ""): 3,
        ("dbapp", "postgresql", "INSERT", "orders", ""): 2,
        ("dbapp", "postgresql", "SELECT", "missing_table", "42P01"): 2}
    http_b = deltas(prom, HTTP_BUCKET, t1, t2)
    db_b = deltas(prom, DB_BUCKET, t1, t2)

    svc_by, route_by = ("service_name",), ("service_name", "http_route")

    def rates(g):
        return {k: v / secs for k, v in g.items()}

    def ratios(counts, errors):
        return {k: errors.get(k, 0) / v for k, v in counts.items()}

    http_err = {k: v for k, v in http.items() if dict(k).get("error_type")}
    db_err = {k: v for k, v in db.items() if dict(k).get("error_type")}
    expected = {
        ("Requests per second", "A"): (svc_by, rates(grouped(http, svc_by))),
        ("Error ratio", "A"): (svc_by, ratios(grouped(http, svc_by), grouped(http_err, svc_by))),
        ("p95 latency", "A"): (svc_by, quantiles(http_b, svc_by, 0.95, secs)),
        ("Request rate by route", "A"): (route_by, rates(grouped(http, route_by))),
        ("Error ratio by route", "A"): (route_by, ratios(grouped(http, route_by),
                                                         grouped(http_err, route_by))),
        ("Latency p50 / p95 / p99 by route", "A"):
            (route_by, quantiles(http_b, route_by, 0.5, secs)),
        ("Latency p50 / p95 / p99 by route", "B"):
            (route_by, quantiles(http_b, route_by, 0.95, secs)),
        ("Latency p50 / p95 / p99 by route", "C"):
            (route_by, quantiles(http_b, route_by, 0.99, secs)),
        ("Database calls per second", "A"): (db_by, rates(grouped(db, db_by))),
        ("Database error ratio", "A"): (db_by, ratios(grouped(db, db_by), grouped(db_err, db_by))),
        ("Database latency p50 / p95 / p99", "A"): (db_by, quantiles(db_b, db_by, 0.5, secs)),
        ("Database latency p50 / p95 / p99", "B"): (db_by, quantiles(db_b, db_by, 0.95, secs)),
        ("Database latency p50 / p95 / p99", "C"): (db_by, quantiles(db_b, db_by, 0.99, secs)),
    }
    targets = prom_targets(d)
    assert sorted((t, ref) for t, ref, _ in targets) == sorted(expected)

    # values the traffic fixes, whatever the latencies were
    rq = expected[("Request rate by route", "A")][1]
    assert rq[("perlapp", "/products")] == 6 / secs
    er = expected[("Error ratio by route", "A")][1]
    assert (er[("perlapp", "/fail")], er[("perlapp", "/status/*")], er[("perlapp", "/")],
            er[("dbapp", "/pg/fail")]) == (1.0, 0.5, 0.0, 1.0)
    assert expected[("Error ratio", "A")][1] == {("perlapp",): 5 / 19, ("dbapp",): 2 / 7}
    assert expected[("Database error ratio", "A")][1] == {
        ("dbapp", "postgresql", "SELECT", "products"): 0.0,
        ("dbapp", "postgresql", "INSERT", "orders"): 0.0,
        ("dbapp", "postgresql", "SELECT", "missing_table"): 1.0}
    # /slow sleeps 200 ms: both observations in (0.1, 0.25]
    slow = {le: v for le, v in grouped(http_b, ("http_route", "le")).items()
            if le[0] == "/slow"}
    assert (slow[("/slow", "0.1")], slow[("/slow", "0.25")]) == (0, 2)

    # every query, with the variables as Grafana writes them: one service and
    # all routes; all services and all routes
    base = {"__rate_interval": f"{window_ms}ms"}
    for svc_values in (["perlapp"], services):
        routes = label_values(variables["route"], {"service": grafana_regex(svc_values)})
        values = {**base, "service": grafana_regex(svc_values), "route": grafana_regex(routes)}
        for title, ref, expr in targets:
            by, want = expected[(title, ref)]
            want = {k: v for k, v in want.items() if k[0] in svc_values}
            got = keyed(prom.query(substitute(expr, values), t2), by)
            assert set(got) == set(want), (title, ref, got, want)
            for k in want:
                assert got[k] == pytest.approx(want[k], rel=1e-9, abs=0), (title, ref, k)
            if (title, ref) in (("Request rate by route", "A"), ("Error ratio by route", "A"),
                                ("Database error ratio", "A")):
                # one or two series per group: no rounding at all
                assert got == want, (title, ref)
    p50_expr = dict(((t, f), e) for t, f, e in targets)[("Latency p50 / p95 / p99 by route", "A")]
    p50 = keyed(prom.query(substitute(p50_expr, {**base, "service": "perlapp", "route": "/slow"}),
                           t2), route_by)
    assert 0.1 < p50[("perlapp", "/slow")] <= 0.25
    assert p50[("perlapp", "/slow")] == 0.1 + (0.25 - 0.1) * ((0.5 * (2 / secs)) / (2 / secs))

    # the traces: the TraceQL of the repeated Tempo panel and of the data links
    check_traces(d, r)


def traceql_queries(d, service="perlapp", route="/status/*"):
    """The TraceQL of the repeated Tempo panel and of the data links (Explore
    URLs), with the variables filled in as Grafana would."""
    (panel,) = [p for p in d["panels"] if p.get("datasource", {}).get("type") == "tempo"]
    assert panel["repeat"] == "service"
    (t,) = panel["targets"]
    assert t["queryType"] == "traceql"
    queries = [substitute(t["query"], {"service": service})]
    links = {json.dumps(l) for p in d["panels"]
             for l in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])}
    assert len(links) == 2
    for link in map(json.loads, links):
        url = link["url"]
        filled = (url.replace("${__field.labels.service_name:percentencode}",
                              urllib.parse.quote(service, safe=""))
                  .replace("${__field.labels.http_route:percentencode}",
                           urllib.parse.quote(route, safe=""))
                  .replace("${__from}", "1700000000000").replace("${__to}", "1700000600000"))
        u = urllib.parse.urlparse(filled)
        assert u.path == "/explore"
        (panes,) = urllib.parse.parse_qs(u.query)["panes"]
        (pane,) = json.loads(panes).values()
        assert pane["datasource"] == "tempo"
        assert pane["range"] == {"from": "1700000000000", "to": "1700000600000"}
        (q,) = pane["queries"]
        assert q["datasource"] == {"type": "tempo", "uid": "tempo"}
        queries.append(q["query"])
    return queries


def check_traces(d, r):
    queries = traceql_queries(d)
    assert sorted(queries) == sorted([
        '{resource.service.name="perlapp"}',
        '{resource.service.name="perlapp"}',
        '{resource.service.name="perlapp" && span.http.route="/status/*"}'])
    # the attributes named there are on rastro's spans of the seed's app
    (rec,) = [x for x in r.snapshot(lambda x: x["kind"] == "SERVER" and
                                    x.get("url.path") == "/status/500")][:1]
    assert (rec["service.name"], rec["http.route"]) == ("perlapp", "/status/*")
