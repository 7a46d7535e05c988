"""Start-up behaviour: --help/--version, privilege and kernel checks with
one-line errors and non-zero exits, configuration errors (exit 2), hooks that
need no tracefs, log levels."""
import os
import subprocess

import pytest

from conftest import RASTRO, ROOT, config_for_ports, free_port, needs_root, world_readable

SEED = str(ROOT / "examples/perlapp/beyla.yml")


def run(args, env=None, prefix=(), timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
    e.update(env or {})
    return subprocess.run([*prefix, str(RASTRO), *args], capture_output=True, text=True,
                          env=e, timeout=timeout)


def test_help_and_version():
    r = run(["--help"])
    assert r.returncode == 0
    for key in ("discovery.instrument", "open_port", "otel_traces_export.endpoint",
                "prometheus_export.port", "RASTRO_CONFIG_PATH", "BEYLA_CONFIG_PATH",
                "ebpf.heuristic_sql_detect", "trace_printer"):
        assert key in r.stdout
    v = run(["--version"])
    assert v.returncode == 0 and v.stdout.startswith("rastro ")


def test_invalid_config_exit_2_names_key_file_line(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("open_port: 8080\nprometheus_export:\n  port: high\n")
    r = run(["--config", str(cfg)])
    assert r.returncode == 2
    assert r.stderr.strip() == (f"rastro: invalid configuration: {cfg}, line 3: "
                                "prometheus_export.port: expected an integer from 0 to 65535")


@needs_root
def test_unknown_key_warns_with_file_and_line(rastro):
    r = rastro("open_port: 8080\notel_metrics_export:\n  intervall: 5s\n")
    assert (f"{r.config_path}, line 3: unknown configuration key "
            "otel_metrics_export.intervall (ignored)") in r.stderr()


def test_config_path_from_environment(tmp_path):
    for var in ("RASTRO_CONFIG_PATH", "BEYLA_CONFIG_PATH"):
        cfg = tmp_path / f"{var}.yml"
        cfg.write_text("log_level: loud\nopen_port: 80\n")
        r = run([], env={var: str(cfg)})
        assert r.returncode == 2 and f"{cfg}, line 1: log_level" in r.stderr


def test_unknown_hook_set_is_refused():
    r = run(["--config", SEED], env={"RASTRO_EBPF_HOOKS": "kprobe"})
    assert r.returncode == 2
    assert r.stderr.strip() == ("rastro: invalid configuration: environment variable "
                                "RASTRO_EBPF_HOOKS (ebpf.hooks): expected one of "
                                "auto|socket|syscall")


def test_not_root_is_one_clear_line():
    # copies nobody can read, wherever the checkout is
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all", str(world_readable(RASTRO)), "--config",
                        str(world_readable(SEED))], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.startswith("rastro:")]
    assert len(lines) == 1
    assert "missing privileges" in lines[0] and "CAP_BPF" in lines[0]


@needs_root
def test_missing_cap_bpf():
    r = subprocess.run(
        ["capsh", "--drop=cap_bpf,cap_sys_admin", "--", "-c", f"{RASTRO} --config {SEED}"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "missing privileges" in r.stderr and "no CAP_BPF" in r.stderr


@needs_root
def test_no_btf_is_reported():
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount -t tmpfs none /sys/kernel/btf && {RASTRO} --config {SEED}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "exposes no BTF" in r.stderr


@needs_root
def test_rejected_program_is_named_with_verifier_reason():
    r = run(["--config", SEED], env={"RASTRO_SELFTEST_REJECT": "1"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "rastro: the kernel refused BPF program rastro_sock_state (Permission denied); "
        "run with --log-level DEBUG for the verifier's log")
    d = run(["--config", SEED, "--log-level", "DEBUG"], env={"RASTRO_SELFTEST_REJECT": "1"})
    assert "the verifier's reason for rastro_sock_state: R" in d.stderr
    assert "invalid mem access" in d.stderr


@needs_root
def test_works_without_tracefs(rastro, perl_app):
    """Only BTF tracepoints: nothing needs /sys/kernel/tracing or debugfs. rastro
    runs in a mount namespace where both are empty tmpfs."""
    hide = ("mount -t tmpfs none /sys/kernel/tracing && mount -t tmpfs none /sys/kernel/debug "
            "&& test ! -e /sys/kernel/tracing/events && exec \"$0\" \"$@\"")
    r = rastro(config_for_ports(perl_app.port), prefix=("unshare", "-m", "bash", "-c", hide))
    r.wait_traced(perl_app.pid)
    import urllib.request
    urllib.request.urlopen(f"http://127.0.0.1:{perl_app.port}/products").read()
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/products"


@needs_root
def test_log_level_from_beyla_variable(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port), env={"BEYLA_LOG_LEVEL": "DEBUG"})
    r.wait_traced(perl_app.pid)
    assert " DEBUG rastro: libbpf: " in r.stderr()
    q = rastro(config_for_ports(perl_app.port), env={"RASTRO_LOG_LEVEL": "WARN",
                                                     "BEYLA_LOG_LEVEL": "DEBUG"},
               wait_started=False)
    import time
    time.sleep(2)
    assert " INFO " not in q.stderr() and " DEBUG " not in q.stderr()


@needs_root
def test_missing_ptrace_is_said_not_silent():
    r = subprocess.run(
        ["capsh", "--drop=cap_sys_ptrace,cap_dac_read_search", "--", "-c",
         f"timeout -s INT 3 {RASTRO} --config {SEED}"],
        capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ["PATH"], "RASTRO_PROMETHEUS_PORT": "0"})
    assert "discovery needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in r.stderr
    assert r.stderr.count("discovery needs CAP_SYS_PTRACE") == 1
