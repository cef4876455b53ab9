"""Is this open or click a machine? Known proxies, prefetchers and scanners.

Input: the request's user agent, client IP and method. Output: True when the hit comes from
a machine (Apple Mail Privacy Protection, Google's image proxy, Microsoft Safe Links,
security scanners, HTTP libraries) — flagged, never discarded. Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# Substrings of user agents that are never a person reading mail.
_AGENTS = re.compile(
    r"googleimageproxy|ggpht\.com|yahoomailproxy|microsoft office|ms-office|"
    r"safelinks|microsoft url|barracuda|mimecast|proofpoint|symantec|messagelabs|forcepoint|"
    r"trend ?micro|sophos|fortiguard|cisco|ironport|zscaler|checkpoint|"
    r"bot\b|crawler|spider|scanner|preview|headless|phantomjs|"
    r"python-requests|python-urllib|aiohttp|httpx|curl/|wget/|go-http-client|java/|okhttp|"
    r"libwww|apache-httpclient|node-fetch|axios",
    re.IGNORECASE,
)
# Networks of proxies and link scanners: Apple MPP (17/8), Google image proxy, Microsoft
# Exchange Online Protection (Safe Links detonation), common gateways.
_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "17.0.0.0/8",
        "66.102.0.0/20",
        "66.249.80.0/20",
        "72.14.199.0/24",
        "74.125.0.0/16",
        "40.92.0.0/15",
        "40.107.0.0/16",
        "52.100.0.0/14",
        "104.47.0.0/17",
        "2a01:111:f400::/48",
        "2620:10d:c090::/44",
    )
)
# Apple MPP fetches with a bare, versionless Mozilla/5.0 agent.
_BARE_MOZILLA = "Mozilla/5.0"


@lru_cache(maxsize=4096)
def _agent_is_machine(user_agent: str) -> bool:
    ua = user_agent.strip()
    return not ua or ua == _BARE_MOZILLA or _AGENTS.search(ua) is not None


@lru_cache(maxsize=16384)
def _ip_is_machine(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in _NETWORKS if net.version == address.version)


def is_machine(user_agent: str | None, ip: str | None, method: str = "GET") -> bool:
    if method == "HEAD":
        return True  # prefetchers check a URL without fetching it
    if _agent_is_machine(user_agent or ""):
        return True
    return bool(ip) and _ip_is_machine(ip or "")


def privacy_ip(ip: str | None, mode: str) -> str | None:
    """The IP as stored under http.store_ip: full, truncated (/24 or /48) or none."""
    if not ip or mode == "none":
        return None
    if mode == "full":
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
