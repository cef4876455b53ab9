"""The servers a side-by-side run starts: a counting smtp-sink, a private Postfix, relay.

Input: loopback ports and a scratch directory per server. Output: running servers whose
`stop()` ends everything they started (also after a failed start). Side effects: files under
the scratch directory only; a MariaDB database per relay run, dropped at stop. Nothing here
touches the system's Postfix (own config_directory, queue_directory and maillog_file).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from bench import _proc

SBIN = "/usr/sbin"
POSTFIX_TOOLS = ("smtp-source", "smtp-sink", "postfix")
SENDER_DOMAIN = "bench.example"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if found is None:
        raise RuntimeError(f"{name} not found (Debian package postfix)")
    return found


def ensure_postfix(install: bool) -> None:
    """Install Debian's postfix (smtp-source, smtp-sink) unless it is there; unconfigured."""
    if all(shutil.which(t) or shutil.which(t, path=SBIN) for t in POSTFIX_TOOLS):
        return
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            "smtp-source, smtp-sink and postfix are needed: run as root with apt-get "
            "available, or `apt-get install postfix` first"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # "No configuration": the package does not configure or start a system instance.
    subprocess.run(
        ["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select "
        b"No configuration\n", check=True, env=env,
    )  # fmt: skip
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip


def postfix_version() -> str:
    out = subprocess.run([tool("postconf"), "-d", "-h", "mail_version"], capture_output=True)
    return out.stdout.decode().strip()


class Sink:
    """Postfix's smtp-sink on loopback, counting the messages it has received (`-c`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self._changed = threading.Condition()
        args = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(
            [*args, f"127.0.0.1:{port}", "1000"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        _proc.wait_for_port(port, 10, alive=lambda: self.proc.poll() is None)

    def _read(self) -> None:
        # Lines look like "sess=7 quit=7 mesg=12\r", one per finished message or session.
        assert self.proc.stdout is not None
        pending = b""
        while chunk := self.proc.stdout.read1(4096):
            pending += chunk
            *done, pending = pending.split(b"\r")
            for line in reversed(done):
                m = re.search(rb"mesg=(\d+)", line)
                if m:
                    with self._changed:
                        self.count = int(m.group(1))
                        self._changed.notify_all()
                    break

    def wait_for(self, count: int, deadline: float) -> bool:
        with self._changed:
            while self.count < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


MAIN_CF = """\
# A private, loopback-only instance for benchmarks; everything else is Postfix's default.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
syslog_name = postfix-bench
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = postfix-bench.localdomain
mydomain = localdomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
"""

# Debian's master.cf minus chroot (the queue directory is not a prepared chroot) and minus
# the services nothing here uses (pickup, local, tlsmgr); smtpd on the benchmark port.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix instance relaying everything to the sink (`postfix -c DIR start`)."""

    def __init__(self, root: Path, port: int, sink_port: int) -> None:
        self.root, self.port, self.sink_port = root, port, sink_port
        self.conf = root / "conf"
        self.master_pid = 0

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("a private Postfix instance needs root (its master runs as root)")
        root = self.root
        self.conf.mkdir(parents=True)
        (root / "queue").mkdir()
        (root / "data").mkdir()
        os.chmod(root, 0o755)  # the postfix user must reach its queue and data directories
        owner = pwd.getpwnam("postfix")
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        (self.conf / "main.cf").write_text(MAIN_CF.format(root=root, sink_port=self.sink_port))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        out = subprocess.run(
            [tool("postfix"), "-c", str(self.conf), "start"], capture_output=True, timeout=60
        )
        pid_file = root / "queue" / "pid" / "master.pid"
        if pid_file.exists():
            self.master_pid = int(pid_file.read_text().strip() or 0)
        if out.returncode != 0:
            raise RuntimeError(f"postfix start failed: {self.log_tail() or out.stderr.decode()}")
        alive = Path(f"/proc/{self.master_pid}")
        _proc.wait_for_port(self.port, 30, alive=alive.exists)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join((self.root / "maillog").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return [self.master_pid] if self.master_pid else []

    def stop(self) -> None:
        if not self.master_pid:
            return
        subprocess.run(
            [tool("postfix"), "-c", str(self.conf), "stop"], capture_output=True, timeout=60
        )
        deadline = time.monotonic() + 20
        while Path(f"/proc/{self.master_pid}").exists() and time.monotonic() < deadline:
            _proc.reap_orphans()
            time.sleep(0.1)
        if Path(f"/proc/{self.master_pid}").exists():
            for pid in reversed(_proc.tree([self.master_pid])):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
        _proc.reap_orphans()
        self.master_pid = 0


def _clean_env() -> dict[str, str]:
    # The run's config file is the whole truth: no RELAY_* override from the caller's shell.
    return {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}


def _relay_cli(config: Path, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "-c", str(config), *args],
        capture_output=True, timeout=120, cwd=config.parent, env=_clean_env(),
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"relay {' '.join(args)} failed: {out.stderr.decode().strip()}")


def mysql_create(server_url: str) -> tuple[str, str]:
    """A fresh database on the MariaDB server; returns (url, name)."""
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"relay_bench_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", autocommit=True, connect_timeout=5,
    )  # fmt: skip
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()
    return url.set(database=name).render_as_string(hide_password=False), name


def mysql_drop(server_url: str, name: str) -> None:
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    conn = pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", autocommit=True, connect_timeout=5,
    )  # fmt: skip
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


class Relay:
    """`relay serve` (all roles) with smtp-source let in by trusted_networks, delivering
    through the smarthost transport to the sink. Prepared with relay's own CLI: migrate,
    tenants add, dkim keygen."""

    def __init__(
        self, root: Path, port: int, sink_port: int, database: str, dkim: bool,
        mysql_url: str, log_level: str, processes: int = 1,
    ) -> None:  # fmt: skip
        self.root, self.port = root, port
        self.processes = processes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mysql_name = ""
        self.mysql_url = mysql_url
        self.database, self.dkim, self.sink_port, self.log_level = (
            database, dkim, sink_port, log_level
        )

    def prepare(self) -> None:
        root, port, sink_port, log_level = self.root, self.port, self.sink_port, self.log_level
        root.mkdir(parents=True, exist_ok=True)
        if self.database == "sqlite":
            url = f"sqlite+aiosqlite:///{root / 'relay.db'}"
        else:
            url, self.mysql_name = mysql_create(self.mysql_url)
        self.config = root / "relay.toml"
        http = _proc.free_port()
        text = f"""\
data_dir = "{root / 'var'}"
[smtp]
listen = ["127.0.0.1:{port}"]
hostname = "relay-bench.localdomain"
trusted_networks = ["127.0.0.1/32"]
trusted_tenant = "bench"
max_connections_per_ip = 1000
[http]
listen = "127.0.0.1:{http}"
public_url = "http://127.0.0.1:{http}"
[database]
url = "{url}"
[delivery]
mode = "smarthost"
[[delivery.accounts]]
name = "sink"
host = "127.0.0.1"
port = {sink_port}
tls = "none"
[tracking]
opens = true
clicks = true
[service]
drain_timeout = "5s"
[log]
level = "{log_level}"
format = "json"
"""
        self.config.write_text(text)
        if self.dkim:
            key = root / "dkim" / f"{SENDER_DOMAIN}.bench.key"
            _relay_cli(self.config, "dkim", "keygen", SENDER_DOMAIN, "--selector", "bench",
                       "--out", str(key))  # fmt: skip
            self.config.write_text(
                text + f'[[dkim.keys]]\ndomain = "{SENDER_DOMAIN}"\nselector = "bench"\n'
                f'key_file = "{key}"\nalgorithm = "rsa-sha256"\n'
            )
        _relay_cli(self.config, "migrate")
        _relay_cli(self.config, "tenants", "add", "bench")

    def start(self) -> None:
        self.prepare()
        env = _clean_env()
        layouts = [["serve"]] if self.processes == 1 else [
            ["serve", "--role", "smtp,web"], ["serve", "--role", "delivery"],
        ]  # fmt: skip
        for n, args in enumerate(layouts):
            with open(self.root / f"relay{n or ''}.log", "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "relay", "-c", str(self.config), *args],
                    cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        try:
            _proc.wait_for_port(self.port, 60, alive=lambda: self.alive())
        except RuntimeError as e:  # say which process gave up, and its last words
            raise RuntimeError(f"{e}; {self.log_tail(3)}") from None

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of each process's log (of the ones that exited, when some did)."""
        logs = [self.root / f"relay{n or ''}.log" for n in range(len(self.procs))]
        exited = [log for log, p in zip(logs, self.procs, strict=True) if p.poll() is not None]
        tails = []
        for log in exited or logs:
            try:
                tails.append(f"{log.name}: " + " | ".join(log.read_text().splitlines()[-lines:]))
            except OSError:
                continue
        return "; ".join(tails)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs] if self.alive() else []

    def stop(self) -> None:
        try:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # graceful: drains within drain_timeout
            for proc in self.procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if self.mysql_name:
                mysql_drop(self.mysql_url, self.mysql_name)
                self.mysql_name = ""

